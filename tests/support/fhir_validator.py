"""HAPI FHIR's official R4 validator for tests: one JVM (deploy/local/fhir-validator.sh serve)
per test session, fed one resource per line. Offline: the jars come from Maven Central once,
the R4 definitions from hapi-fhir-validation-resources-r4; no FHIR package registry is used."""

from __future__ import annotations

import atexit
import json
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "deploy" / "local" / "fhir-validator.sh"


@dataclass(frozen=True)
class Verdict:
    errors: int
    warnings: int
    issues: list[dict[str, str]]

    def error_messages(self) -> list[str]:
        return [f"{i['location']}: {i['message']}" for i in self.issues if i["severity"] in ("error", "fatal")]


class FhirValidator:
    def __init__(self) -> None:
        subprocess.run([str(SCRIPT), "fetch"], check=True, timeout=900)
        self._process = subprocess.Popen([str(SCRIPT), "serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=subprocess.DEVNULL, text=True, encoding="utf-8")
        self._lock = threading.Lock()
        first = self._process.stdout.readline()
        if json.loads(first or "{}").get("ready") is not True:
            raise RuntimeError(f"the FHIR validator did not start: {first!r}")
        self.validated: list[tuple[str, Verdict]] = []  # (resourceType, verdict) of the session

    def validate(self, resource: dict[str, Any]) -> Verdict:
        with self._lock:
            self._process.stdin.write(json.dumps(resource, ensure_ascii=False) + "\n")
            self._process.stdin.flush()
            answer = json.loads(self._process.stdout.readline())
        verdict = Verdict(answer["errors"], answer["warnings"], answer["issues"])
        self.validated.append((resource.get("resourceType", "?"), verdict))
        return verdict

    def assert_valid(self, resource: dict[str, Any]) -> Verdict:
        verdict = self.validate(resource)
        assert verdict.errors == 0, (f"{resource.get('resourceType')} is not valid FHIR R4:\n  "
                                     + "\n  ".join(verdict.error_messages()) + f"\n{json.dumps(resource, indent=1)}")
        return verdict

    def summary(self) -> str:
        by_type: dict[str, int] = {}
        for resource_type, _ in self.validated:
            by_type[resource_type] = by_type.get(resource_type, 0) + 1
        invalid = sum(1 for _, v in self.validated if v.errors)
        kinds = ", ".join(f"{n} {t}" for t, n in sorted(by_type.items()))
        # A resource with errors is either a test's deliberate control or a failed assert_valid.
        return f"FHIR validator (HAPI FHIR, offline): {len(self.validated)} resources ({kinds}); {invalid} with errors"

    def close(self) -> None:
        if self.validated:
            print("\n" + self.summary(), file=sys.stderr)
        if self._process.poll() is None:
            self._process.stdin.close()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()


_shared: FhirValidator | None = None


def shared_validator() -> FhirValidator:
    """The session's validator, started on first use."""
    global _shared
    if _shared is None:
        _shared = FhirValidator()
        atexit.register(_shared.close)
    return _shared


def checked(validator: FhirValidator, response: Any, status: int, resource_type: str) -> dict:
    """An HTTP answer of a FHIR API: its status, FHIR content type, resource type, and 0 errors
    from the validator."""
    from reflexe_common.fhir import FHIR_JSON

    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(FHIR_JSON)
    resource = response.json()
    assert resource["resourceType"] == resource_type, resource
    validator.assert_valid(resource)
    return resource


def expressions(outcome: dict) -> set[str]:
    """The elements an OperationOutcome names."""
    return {e for issue in outcome["issue"] for e in issue.get("expression", [])}
