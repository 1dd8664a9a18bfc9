"""The broken variants the chaos checker must catch are broken as they say (each patch applied in
a process of its own: it changes the platform's classes for the whole process)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from chaos.broken import VARIANTS

OVERBOOKING = textwrap.dedent("""
    from datetime import UTC, datetime, timedelta
    import sys
    from chaos.broken import VARIANTS
    from reflexe_capacity.domain.capacity import CapacityDeclaration, HadLedger, NoPlaceLeft
    from reflexe_common.vocabulary import CapacityStatus

    if sys.argv[1:]:
        VARIANTS[sys.argv[1]].patch()
    now = datetime(2026, 11, 27, 9, tzinfo=UTC)
    ledger = HadLedger("340000001")
    ledger.declare(CapacityDeclaration("340000001", 1, 1, CapacityStatus.OPEN, now))
    ledger.place_hold("h1", "r1", now, timedelta(minutes=30))
    try:
        ledger.place_hold("h2", "r2", now, timedelta(minutes=30))
    except NoPlaceLeft:
        print("refused")
    else:
        print("held twice")
""")


def _second_hold(*variant: str) -> str:
    done = subprocess.run([sys.executable, "-c", OVERBOOKING, *variant], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_the_matcher_ignoring_holds_promises_one_place_twice():
    assert VARIANTS["matcher-ignoring-holds"].service == "capacity"
    assert _second_hold() == "refused"
    assert _second_hold("matcher-ignoring-holds") == "held twice"
