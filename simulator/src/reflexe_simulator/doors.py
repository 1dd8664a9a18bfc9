"""Which door each simulated establishment uses: the REST API, FHIR R4, or HL7 v2 over MLLP.

Real hospitals and HADs connect with what their information system speaks. Deterministic for a
scenario seed and the fractions: in each department, a share of the hospitals post their
referrals as FHIR ServiceRequests (the others through the REST API), a share send their ADT
messages (ED discharges, inpatient admissions) to the HL7 gateway; a share of the HADs answer
offers by updating their FHIR Task, a share report admissions and discharges by HL7. A fraction
above 0 gives at least one establishment per department, so a small department uses the door too.

The pseudonym: a hospital that sends ADT must name its patients, in its referrals, the way the
gateway does from PID-3 (docs/integration-hl7.md): HMAC-SHA-256 under the key it shares with the
gateway of "<assigning authority>|<local patient id>", over its own patient number (IPP, PID-3 of
type PI) and the authority's OID. Hospitals without ADT keep their own key over the NIR.
"""

from __future__ import annotations

import hashlib
import hmac
import random
import uuid
from dataclasses import dataclass
from typing import Any

from reflexe_simulator.scenario import Scenario

DEFAULT_FHIR_HOSPITALS = 1 / 3
DEFAULT_HL7_HOSPITALS = 0.5
DEFAULT_FHIR_HADS = 0.4
DEFAULT_HL7_HADS = 0.4


@dataclass(frozen=True)
class DoorFractions:
    fhir_hospitals: float = DEFAULT_FHIR_HOSPITALS
    hl7_hospitals: float = DEFAULT_HL7_HOSPITALS
    fhir_hads: float = DEFAULT_FHIR_HADS
    hl7_hads: float = DEFAULT_HL7_HADS

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name.replace('_', ' ')}: a fraction between 0 and 1, got {value}")


@dataclass(frozen=True)
class Doors:
    """The FINESS of the establishments using each door other than REST."""

    fhir_hospitals: frozenset[str] = frozenset()
    hl7_hospitals: frozenset[str] = frozenset()
    fhir_hads: frozenset[str] = frozenset()
    hl7_hads: frozenset[str] = frozenset()

    def posts_fhir(self, finess: str) -> bool:
        return finess in self.fhir_hospitals

    def sends_adt(self, finess: str) -> bool:
        return finess in self.hl7_hospitals

    def answers_fhir(self, finess: str) -> bool:
        return finess in self.fhir_hads

    def reports_hl7(self, finess: str) -> bool:
        return finess in self.hl7_hads

    def summary(self) -> dict[str, list[str]]:
        return {name: sorted(value) for name, value in vars(self).items()}


def _share(finesses: list[str], fraction: float, rng: random.Random) -> set[str]:
    if fraction <= 0 or not finesses:
        return set()
    count = min(len(finesses), max(1, round(fraction * len(finesses))))
    return set(rng.sample(sorted(finesses), count))


def plan_doors(scenario: Scenario, fractions: DoorFractions) -> Doors:
    chosen: dict[str, set[str]] = {name: set() for name in vars(fractions)}
    for code, department in sorted(scenario.departments.items()):
        hospitals = [h.finess for h in department.hospitals]
        hads = [h.finess for h in department.hads]
        for name, fraction in vars(fractions).items():
            rng = random.Random(f"doors:{scenario.seed}:{code}:{name}")
            chosen[name] |= _share(hospitals if name.endswith("hospitals") else hads, fraction, rng)
    return Doors(**{name: frozenset(value) for name, value in chosen.items()})


def gateway_senders(doors: Doors, networks: list[str]) -> dict[str, Any]:
    """The gateway's allow-list (GATEWAY_SENDERS) for the establishments that send ADT."""
    senders = {finess: {"kind": "hospital", "networks": list(networks)} for finess in sorted(doors.hl7_hospitals)}
    senders |= {finess: {"kind": "had", "networks": list(networks)} for finess in sorted(doors.hl7_hads)}
    return senders


@dataclass(frozen=True)
class PatientIdDomain:
    """An establishment's patient numbering (its IPP): the assigning authority of PID-3."""

    namespace: str
    oid: str

    @classmethod
    def of(cls, finess: str) -> PatientIdDomain:
        # A fictional but well-formed OID: the UUID arc 2.25 (ITU-T X.667) of a name-based UUID.
        return cls(f"IPP-{finess}", f"2.25.{uuid.uuid5(uuid.NAMESPACE_OID, f'reflexe-simulator:ipp:{finess}').int}")

    def local_id(self, person_key: str) -> str:
        """This establishment's patient number for a person (stable, distinct per establishment)."""
        digest = hashlib.sha256(f"{self.oid}|{person_key}".encode()).hexdigest()
        return f"IPP{int(digest[:12], 16) % 10**8:08d}"


def gateway_pseudonym(key: bytes, identifier: str, authority: str) -> str:
    """The pseudonym the HL7 gateway computes from PID-3 (identifier of type PI and its authority's
    OID), which a hospital sending ADT must also give its referrals."""
    if not key:
        raise ValueError("the pseudonym key must not be empty")
    return hmac.new(key, f"{authority}|{identifier}".encode(), hashlib.sha256).hexdigest()
