"""The matcher: follows the referral event log, holds a place at the best HAD, cascades on
decline or expiry, escalates when no HAD is left.

Every decision uses the event's own time, never the wall clock, so replaying the same events in
the same order gives the same offers (offer ids are derived from the referral and the attempt).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from typing import Any

from reflexe.v1 import capacity_pb2, matching_pb2, referral_pb2

from reflexe_capacity.domain.capacity import CapacityDeclaration, HadLedger, HoldConflict, NoPlaceLeft, UnknownHold
from reflexe_capacity.domain.matching import Candidate, MatchRequest, desk_offer, match
from reflexe_capacity.domain.registry import HadEstablishment
from reflexe_capacity.service_layer.unit_of_work import UnitOfWork
from reflexe_common.envelope import Envelope, PoisonRecord, dt, ts, wrap
from reflexe_common.topics import CAPACITY_EVENTS, MATCHING_EVENTS
from reflexe_common.vocabulary import Equipment, PlaceOfCare, Urgency

EVENT_SOURCE = "reflexe/capacity"
_OFFER_NAMESPACE = uuid.UUID("5f0c1d7e-8a39-4c55-9a0e-2b1f3c4d5e6f")


class LedgerContention(RuntimeError):
    """Other matchers kept changing the ledgers a decision needed (never seen in practice)."""


# Each retry follows a commit of a competing matcher on the same HAD: progress is made anyway.
MAX_DECISIONS = 1000


@dataclass(frozen=True)
class MatcherPolicy:
    hold_within_24h: timedelta = timedelta(minutes=30)
    hold_planned: timedelta = timedelta(hours=4)
    stale_after: timedelta = timedelta(hours=12)
    response_time_window: timedelta = timedelta(days=7)


def offer_id_for(referral_id: str, attempt: int) -> str:
    return str(uuid.uuid5(_OFFER_NAMESPACE, f"{referral_id}/{attempt}"))


def _requested_on(request: referral_pb2.ReferralRequest, at: datetime) -> date:
    """The patient's age is the one at the request: the same referral matched again later (a decline,
    an expiry) keeps the same mention requirements."""
    return dt(request.requested_at).date() if request.HasField("requested_at") else at.date()


def _match_request(request: referral_pb2.ReferralRequest, departments: list[str], tried: list[str], at: datetime) -> MatchRequest:
    return MatchRequest(
        referral_id=request.referral_id, department=request.department, care_commune=request.patient.care_commune,
        place_of_care=PlaceOfCare(request.patient.place_of_care), ehpad_finess=request.patient.ehpad_finess or None,
        main_mpp=request.clinical.main_mpp, associated_mpp=tuple(request.clinical.associated_mpp),
        equipment=frozenset(Equipment(e) for e in request.clinical.equipment),
        patient_birth_year=request.patient.birth_year, requested_on=_requested_on(request, at), urgency=Urgency(request.clinical.urgency),
        departments=frozenset(departments), excluded_hads=frozenset(tried),
    )


class Matcher:
    def __init__(self, policy: MatcherPolicy) -> None:
        self.policy = policy

    async def handle(self, uow: UnitOfWork, envelope: Envelope) -> None:
        """Handles one referral event inside the idempotent consumer's transaction."""
        message = envelope.message
        match message:
            case referral_pb2.ReferralRequested():
                request = message.request
                try:
                    _match_request(request, [], [], dt(message.header.occurred_at))
                except ValueError as exc:  # the referral service validates: this did not come through it
                    raise PoisonRecord(f"referral {request.referral_id} cannot be matched: {exc}") from exc
                eligible = not request.HasField("avis") or request.avis.eligible
                # An incomplete referral (consent or GP agreement missing) is kept, not matched:
                # its ReferralCompleted starts the search.
                complete = not message.missing_conditions
                row = await uow.save_match_request(request.referral_id, request.department, request.SerializeToString())
                if row is not None and eligible and complete:
                    await self._offer_next(uow, request.referral_id, dt(message.header.occurred_at), row=row)
            case referral_pb2.ReferralCompleted():
                await self._offer_next(uow, message.header.referral_id, dt(message.header.occurred_at))
            case referral_pb2.ReferralDeclaredIneligible():
                await uow.update_match_request(message.header.referral_id, open=False)
            case referral_pb2.OfferAccepted():
                await self._change_hold(uow, message.offer_id, "confirm", dt(message.header.occurred_at), answered=True)
            case referral_pb2.OfferDeclined() | referral_pb2.OfferExpired():
                at = dt(message.header.occurred_at)
                await self._change_hold(uow, message.offer_id, "release", at,
                                        answered=isinstance(message, referral_pb2.OfferDeclined))
                await self._offer_next(uow, message.header.referral_id, at)
            case referral_pb2.AcceptanceWithdrawn():
                # The evaluation went against admission: the place the acceptance kept is given
                # back and the search goes on, exactly as after a decline.
                at = dt(message.header.occurred_at)
                await self._change_hold(uow, message.offer_id, "release", at)
                await self._offer_next(uow, message.header.referral_id, at)
            case referral_pb2.OfferWithdrawn():
                await self._change_hold(uow, message.offer_id, "release", dt(message.header.occurred_at))
            case referral_pb2.PatientAdmitted():
                at = dt(message.header.occurred_at)
                for hold in await uow.holding_holds_of_referral(message.header.referral_id):
                    await self._change_hold(uow, hold["hold_id"], "convert", at)
                await uow.update_match_request(message.header.referral_id, open=False)
            case referral_pb2.ReferralCancelled():
                at = dt(message.header.occurred_at)
                for hold in await uow.holding_holds_of_referral(message.header.referral_id):
                    await self._change_hold(uow, hold["hold_id"], "release", at)
                await uow.update_match_request(message.header.referral_id, open=False)
            case referral_pb2.SearchWidened():
                await uow.update_match_request(message.header.referral_id, departments=list(message.departments))
                await self._offer_next(uow, message.header.referral_id, dt(message.header.occurred_at))
            case referral_pb2.DeskOfferRequested():
                await self._offer_next(uow, message.header.referral_id, dt(message.header.occurred_at),
                                       desk_choice=message.had_finess)

    async def _offer_next(self, uow: UnitOfWork, referral_id: str, at: datetime, desk_choice: str | None = None,
                          row: Any | None = None) -> None:
        """Offers the referral to the best HAD, or tells the desk none can take it. ``row``: the
        referral's request just stored (a new referral: no hold yet), else it is read and locked."""
        row = row or await uow.lock_match_request(referral_id)
        if row is None or not row["open"]:
            return
        if row["holding"]:
            # An offer is already out (a redelivered or reordered event, or a desk pick sent again
            # before the first offer reached the referral service, which refuses desk picks while
            # an offer is pending): nothing to do; holding a second place would fail or double it.
            return
        request = referral_pb2.ReferralRequest.FromString(row["request"])
        wanted = _match_request(request, list(row["departments"]), list(row["tried_hads"]), at)
        offer_id = offer_id_for(referral_id, row["attempts"] + 1)
        hold_for = self.policy.hold_within_24h if request.clinical.urgency == Urgency.WITHIN_24H else self.policy.hold_planned
        for _ in range(MAX_DECISIONS):
            if desk_choice:
                found = await uow.had_with_ledger(desk_choice)
                boards = [found] if found else []
            else:
                boards = await uow.candidates(sorted(wanted.search_departments))
            candidates = [Candidate(had, ledger, ledger.median_response_seconds(at, self.policy.response_time_window))
                          for had, ledger in boards]
            if desk_choice:
                decision = desk_offer(wanted, candidates[0], at, self.policy.stale_after) if candidates else None
            else:
                decision = match(wanted, candidates, at, self.policy.stale_after)
            if decision is None or decision.chosen is None:
                explanation = decision.explain() if decision else f"HAD {desk_choice} inconnue du registre"
                await self._emit_matching(uow, request.department, matching_pb2.MatchExhausted(
                    referral_id=referral_id, department=request.department, occurred_at=ts(at), explanation=explanation,
                    explanation_json=json.dumps(decision.as_dict() if decision else {}, ensure_ascii=False),
                    by_desk=bool(desk_choice)), at)
                return
            had, ledger = next(board for board in boards if board[0].finess == decision.chosen)
            read_version = ledger.version
            # The referral holds no place anywhere (checked above), so the ledger needs none of its holds.
            hold = ledger.place_hold(offer_id, referral_id, at, hold_for)
            if await uow.save_new_hold(ledger, read_version, hold, request.department, bool(desk_choice)):
                break
            # Another matcher changed that HAD's ledger meanwhile (it has committed by now): decide again.
        else:
            raise LedgerContention(f"referral {referral_id}: ledgers kept changing during {MAX_DECISIONS} decisions")
        offer = matching_pb2.OfferProposed(
            referral_id=referral_id, department=request.department, occurred_at=ts(at), offer_id=offer_id,
            had_finess=had.finess, hold_id=hold.hold_id, hold_until=ts(hold.expires_at),
            explanation=decision.explain(), explanation_json=json.dumps(decision.as_dict(), ensure_ascii=False),
            by_desk=bool(desk_choice))
        await uow.publish([(MATCHING_EVENTS.name, request.department, wrap(offer, EVENT_SOURCE, time=at)),
                             _live_places_event(ledger, at, had)])

    async def _change_hold(self, uow: UnitOfWork, hold_id: str, change: str, at: datetime,
                           answered: bool = False) -> None:
        for _ in range(MAX_DECISIONS):
            found = await uow.hold_with_ledger(hold_id)
            if found is None:
                return  # an offer this matcher never made (e.g. withdrawn before its hold was stored)
            had, ledger = found
            read_version = ledger.version
            try:
                if change == "convert":
                    hold = ledger.convert(hold_id, at)
                else:
                    hold = getattr(ledger, change)(hold_id)
            except (UnknownHold, HoldConflict):
                return
            if ledger.version == read_version:
                return  # already done (a redelivered or reordered event)
            if answered:
                ledger.record_answer(hold_id, at)
            if await uow.save_hold_change(ledger, read_version, hold, at, answered):
                break
        else:
            raise LedgerContention(f"hold {hold_id}: its ledger kept changing during {MAX_DECISIONS} attempts")
        await self.emit_live_places(uow, ledger, at, had)

    async def declare(self, uow: UnitOfWork, declaration: CapacityDeclaration, channel: str) -> bool:
        """Record a declaration (history kept); the current one changes only if it is newer."""
        found = await uow.had_with_ledger(declaration.had_finess)
        if found is None:
            raise LookupError(declaration.had_finess)
        if not await uow.save_declaration(declaration, channel):
            return False
        for _ in range(MAX_DECISIONS):
            had, ledger = found
            read_version = ledger.version
            if not ledger.declare(declaration):
                return True  # stored in the history, but not newer than the current one
            if await uow.save_ledger(ledger, read_version):
                break
            found = await uow.had_with_ledger(declaration.had_finess)
        else:
            raise LedgerContention(f"HAD {declaration.had_finess}: its ledger kept changing during {MAX_DECISIONS} attempts")
        department = sorted(had.departments)[0]
        declared = wrap(capacity_pb2.CapacityDeclared(
            had_finess=had.finess, department=department, places_available=declaration.places_available,
            admissions_possible_today=declaration.admissions_possible_today, status=str(declaration.status),
            declared_at=ts(declaration.declared_at), authorised_places=had.authorised_places,
            departments=sorted(had.departments), active_patients=declaration.active_patients), EVENT_SOURCE)
        await uow.publish([(CAPACITY_EVENTS.name, department, declared),
                             _live_places_event(ledger, declaration.declared_at, had)])
        return True

    async def emit_live_places(self, uow: UnitOfWork, ledger: HadLedger, at: datetime,
                               had: HadEstablishment) -> None:
        await uow.publish([_live_places_event(ledger, at, had)])

    @staticmethod
    async def _emit_matching(uow: UnitOfWork, department: str, message, at: datetime) -> None:
        await uow.publish([(MATCHING_EVENTS.name, department, wrap(message, EVENT_SOURCE, time=at))])


def _live_places_event(ledger: HadLedger, at: datetime, had: HadEstablishment) -> tuple[str, str, Envelope]:
    department = sorted(had.departments)[0]
    d = ledger.declaration
    return CAPACITY_EVENTS.name, department, wrap(capacity_pb2.LivePlacesChanged(
        had_finess=had.finess, department=department, occurred_at=ts(at), live_places=ledger.live_places(),
        declared_places=d.places_available if d else 0, status=str(d.status) if d else "",
        authorised_places=had.authorised_places, departments=sorted(had.departments)), EVENT_SOURCE)


__all__ = ["LedgerContention", "Matcher", "MatcherPolicy", "NoPlaceLeft", "offer_id_for"]
