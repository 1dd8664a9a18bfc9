"""Who hears of what: the table of docs/webhooks.md, and event → notice translation."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from reflexe.v1 import matching_pb2, referral_pb2

from reflexe_common.envelope import ts, wrap
from reflexe_notify.adapters.events import notice_from
from reflexe_notify.domain.recipients import Recipient
from reflexe_notify.domain.routing import EventKind as K
from reflexe_notify.domain.routing import HAD_AUDIENCE, HadAudience, had_audience, hads_told, recipients_for
from tests.support.data import pseudonym

DESK, HAD, HOSPITAL = "desk:34", "had:340011295", "hospital:340780477"
AT = datetime(2026, 11, 22, 10, 15, tzinfo=UTC)


@pytest.mark.parametrize(("kind", "expected"), [
    (K.OFFER_PROPOSED, {DESK, HAD}),
    (K.OFFER_UNANSWERED, {DESK, HAD}),
    (K.OFFER_ACCEPTED, {DESK, HOSPITAL}),
    (K.OFFER_DECLINED, {DESK, HOSPITAL}),
    (K.OFFER_EXPIRED, {DESK, HAD, HOSPITAL}),
    (K.OFFER_WITHDRAWN, {DESK, HAD}),
    (K.REFERRAL_ADMITTED, {DESK, HOSPITAL}),
    (K.REFERRAL_CANCELLED, {DESK, HOSPITAL}),  # HADs hear of it only as concerned (below)
    (K.REFERRAL_REQUESTED, {DESK}),
    (K.REFERRAL_ESCALATED, {DESK}),
    (K.ADMISSION_OVERDUE, {DESK}),
    (K.DELIVERY_FAILED, {DESK}),
])
def test_routing_table(kind: K, expected: set[str]) -> None:
    assert {str(r) for r in recipients_for(kind, "34", "340011295", "340780477")} == expected


def test_a_cancellation_reaches_every_had_it_concerns_and_no_other() -> None:
    told = {str(r) for r in recipients_for(K.REFERRAL_CANCELLED, "34", None, "340780477",
                                           concerned_hads=["340011295", "310781406", "340011295"])}
    assert told == {DESK, HOSPITAL, HAD, "had:310781406"}


def test_only_the_named_had_hears_of_its_own_offer_whatever_the_referral_concerns() -> None:
    for kind in (K.OFFER_EXPIRED, K.OFFER_WITHDRAWN, K.OFFER_UNANSWERED, K.OFFER_PROPOSED):
        hads = [r for r in recipients_for(kind, "34", "340011295", None, concerned_hads=["310781406"])
                if r.kind == "had"]
        assert [str(r) for r in hads] == [HAD]
    assert hads_told(K.OFFER_EXPIRED, None) == []  # no HAD named, none told


def test_events_of_no_had_audience_reach_no_had() -> None:
    for kind in set(K) - set(HAD_AUDIENCE):
        assert hads_told(kind, "340011295", ["310781406"]) == []
    assert had_audience(K.REFERRAL_CANCELLED) is HadAudience.CONCERNED


def test_an_unknown_source_hospital_is_left_out() -> None:
    assert [str(r) for r in recipients_for(K.OFFER_ACCEPTED, "34", "340011295", None)] == [DESK]


def test_every_kind_is_routed_at_least_to_the_desk() -> None:
    for kind in K:
        assert Recipient.desk("2A") in recipients_for(kind, "2A")


@pytest.mark.parametrize("text", ["had:34001129", "desk:99", "ars:76", "desk34", "hospital:"])
def test_invalid_recipients_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        Recipient.parse(text)


def test_recipient_round_trip() -> None:
    for text in (DESK, HAD, HOSPITAL, "desk:2B", "desk:974"):
        assert str(Recipient.parse(text)) == text


def header(**kw) -> referral_pb2.ReferralEventHeader:
    return referral_pb2.ReferralEventHeader(referral_id="r-1", department="34", occurred_at=ts(AT), actor="system", **kw)


def test_offer_proposed_becomes_the_documented_body() -> None:
    event = matching_pb2.OfferProposed(referral_id="r-1", department="34", occurred_at=ts(AT), offer_id="o-1",
                                       had_finess="340011295", hold_until=ts(AT), explanation="la plus proche",
                                       by_desk=False, hold_id="h-1")
    notice = notice_from(wrap(event, "capacity"))
    assert notice.kind is K.OFFER_PROPOSED and notice.had_finess == "340011295"
    assert json.loads(notice.body()) == {"type": "offer.proposed", "timestamp": AT.isoformat(), "data": {
        "referral_id": "r-1", "department": "34", "offer_id": "o-1", "had_finess": "340011295",
        "hold_until": AT.isoformat(), "explanation": "la plus proche", "by_desk": False}}


def test_referral_requested_carries_no_patient_data() -> None:
    event = referral_pb2.ReferralRequested(header=header(), request=referral_pb2.ReferralRequest(
        referral_id="r-1", department="34", source=referral_pb2.Source(kind="ED", finess="340780477"),
        patient=referral_pb2.Patient(pseudonym=pseudonym("p-secret"), birth_year=1940, care_commune="34172"),
        clinical=referral_pb2.Clinical(main_mpp="04", urgency="WITHIN_24H")))
    notice = notice_from(wrap(event, "referral"))
    assert notice.data == {"referral_id": "r-1", "department": "34", "source_kind": "ED", "main_mpp": "04",
                           "urgency": "WITHIN_24H"}
    assert pseudonym("p-secret") not in notice.body() and "1940" not in notice.body()


def test_offer_declined_carries_its_reason() -> None:
    notice = notice_from(wrap(referral_pb2.OfferDeclined(header=header(), offer_id="o-1", had_finess="340011295",
                                                         reason="NO_CAPACITY", text="free text"), "referral"))
    assert notice.kind is K.OFFER_DECLINED
    assert notice.data == {"referral_id": "r-1", "department": "34", "offer_id": "o-1", "had_finess": "340011295",
                           "reason": "NO_CAPACITY"}


def test_an_offer_withdrawn_tells_its_had_why_and_names_no_other() -> None:
    notice = notice_from(wrap(referral_pb2.OfferWithdrawn(header=header(), offer_id="o-1", had_finess="340011295",
                                                          why="referral is CANCELLED"), "referral"))
    assert notice.kind is K.OFFER_WITHDRAWN and notice.had_finess == "340011295"
    assert notice.data == {"referral_id": "r-1", "department": "34", "offer_id": "o-1", "had_finess": "340011295",
                           "why": "referral is CANCELLED"}


def test_a_cancellation_names_no_had() -> None:
    notice = notice_from(wrap(referral_pb2.ReferralCancelled(header=header(), reason="PATIENT_DECEASED",
                                                             text="free text"), "referral"))
    assert notice.kind is K.REFERRAL_CANCELLED and notice.had_finess is None
    assert notice.data == {"referral_id": "r-1", "department": "34", "reason": "PATIENT_DECEASED"}


def test_events_nobody_hears_of() -> None:
    for event in (referral_pb2.SearchWidened(header=header()), referral_pb2.OfferMade(header=header()),
                  matching_pb2.MatchExhausted(referral_id="r-1", department="34", by_desk=False)):
        assert notice_from(wrap(event, "x")) is None


def test_a_desk_choice_exhausted_is_an_escalation() -> None:
    notice = notice_from(wrap(matching_pb2.MatchExhausted(referral_id="r-1", department="34", occurred_at=ts(AT),
                                                          explanation="plus de place", by_desk=True), "capacity"))
    assert notice.kind is K.REFERRAL_ESCALATED and notice.data["why"] == "plus de place"
