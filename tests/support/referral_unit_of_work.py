"""An in-memory unit of work for the referral service's commands (reflexe_referral.service_layer
.unit_of_work.UnitOfWork): each unit works on a copy of what was committed, which replaces the
committed state only when the unit ends without an exception, as a PostgreSQL transaction."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import TracebackType

from reflexe_referral.domain.events import Event, ReferralRequested
from reflexe_referral.domain.model import Referral


@dataclass(frozen=True)
class AuditRecord:
    action: str
    referral_id: str | None
    refused_code: str | None


@dataclass
class Stored:
    request_hash: str
    events: list[Event]


@dataclass
class Committed:
    referrals: dict[str, Stored] = field(default_factory=dict)
    audits: list[AuditRecord] = field(default_factory=list)
    patient_event_outcomes: dict[str, dict] = field(default_factory=dict)


class FakeReferrals:
    def __init__(self, committed: Committed) -> None:
        self.rows = {rid: Stored(s.request_hash, list(s.events)) for rid, s in committed.referrals.items()}
        self.audits = list(committed.audits)
        self.patient_event_outcomes = dict(committed.patient_event_outcomes)
        self.serialised: list[str] = []

    async def serialise(self, key: str) -> None:
        self.serialised.append(key)

    async def request_hash(self, referral_id: str) -> str | None:
        stored = self.rows.get(referral_id)
        return stored.request_hash if stored else None

    async def load(self, referral_id: str, for_update: bool = True) -> Referral | None:
        stored = self.rows.get(referral_id)
        return Referral.from_events(stored.events) if stored else None

    async def create(self, first: ReferralRequested, request_hash: str, rest: list[Event]) -> Referral:
        assert first.referral_id not in self.rows, "created twice"
        referral = Referral.from_events([first])
        self.rows[first.referral_id] = Stored(request_hash, [first])
        await self.append(referral, rest)
        return referral

    async def append(self, referral: Referral, new_events: list[Event]) -> None:
        for event in new_events:
            referral.apply(event)
            self.rows[referral.referral_id].events.append(event)

    async def audit(self, subject: str, actor: str, action: str, referral_id: str | None, department: str | None,
                    refused_code: str | None = None) -> None:
        self.audits.append(AuditRecord(action, referral_id, refused_code))


    async def referral_ids_of_patient(self, pseudonym: str) -> list[str]:
        requests = [stored.events[0].request for stored in self.rows.values()]
        return [r.referral_id for r in sorted(requests, key=lambda r: r.requested_at, reverse=True)
                if r.patient.pseudonym == pseudonym]

    async def patient_event_outcome(self, message_key: str) -> dict | None:
        return self.patient_event_outcomes.get(message_key)

    async def record_patient_event_outcome(self, message_key: str, outcome: dict) -> None:
        assert message_key not in self.patient_event_outcomes, "recorded twice"
        self.patient_event_outcomes[message_key] = dict(outcome)


class FakeUnitOfWork:
    def __init__(self) -> None:
        self.committed = Committed()
        self.commits = 0
        self.rollbacks = 0
        self.referrals = FakeReferrals(self.committed)
        self.serialised: list[str] = []  # over every unit, committed or not

    async def __aenter__(self) -> FakeUnitOfWork:
        self.referrals = FakeReferrals(self.committed)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.serialised.extend(self.referrals.serialised)
        if exc_type is None:
            self.committed = Committed(self.referrals.rows, self.referrals.audits,
                                       self.referrals.patient_event_outcomes)
            self.commits += 1
        else:
            self.rollbacks += 1

    def events(self, referral_id: str) -> list[Event]:
        """What is committed for the referral."""
        stored = self.committed.referrals.get(referral_id)
        return list(stored.events) if stored else []
