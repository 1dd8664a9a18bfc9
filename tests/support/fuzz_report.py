"""The outcomes a module's fuzz tests met, printed once the module is done.

Printed by a module fixture's teardown rather than by a last test: tests run in random order
(pytest-randomly), and a test named to come last may come first, or run alone."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator

import pytest


def report_at_module_end(title: str, seen: Counter[str]) -> Callable[..., Iterator[None]]:
    """An autouse module fixture printing `seen` after the module's last test, when it ran any."""

    @pytest.fixture(scope="module", autouse=True)
    def report(request: pytest.FixtureRequest) -> Iterator[None]:
        yield
        if seen:
            # Outside the capture of the last test's teardown, as capsys.disabled() prints.
            with request.config.pluginmanager.getplugin("capturemanager").global_and_fixture_disabled():
                print(f"\n{title}: {dict(sorted(seen.items()))}")

    return report
