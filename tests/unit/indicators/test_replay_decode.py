"""The replay decodes a record lazily: its CloudEvents type first, the payload parsed only for
the types the fold reads; a record of another type is skipped unparsed, and a record the live
path would refuse (no type, an unknown type, a payload that does not parse) is counted as skipped."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from reflexe.v1 import capacity_pb2 as cpb
from reflexe.v1 import referral_pb2 as pb

from reflexe_common.envelope import ts
from reflexe_indicators.domain.facts import FOLDED_TYPES, fold
from reflexe_indicators.service_layer.replay import IGNORED, _decode

AT = datetime(2025, 3, 1, 9, 30, tzinfo=UTC)


def headers(type_name: str) -> list[tuple[str, bytes]]:
    return [("ce_id", b"1"), ("ce_type", type_name.encode()), ("content-type", b"application/protobuf")]


def header() -> pb.ReferralEventHeader:
    return pb.ReferralEventHeader(referral_id=str(uuid.uuid4()), department="34", occurred_at=ts(AT))


def test_a_folded_type_is_parsed_and_folds():
    message = pb.OfferMade(header=header(), offer_id="o1", had_finess="340000108")
    decoded = _decode(headers("reflexe.v1.OfferMade"), message.SerializeToString())
    assert decoded == message
    assert fold(decoded)


def test_a_type_the_fold_ignores_is_skipped_without_parsing_its_payload():
    # Not a valid protobuf payload: parsing it would fail, so IGNORED proves it was not parsed.
    assert _decode(headers("reflexe.v1.OfferUnanswered"), b"\xff\xff\xff") is IGNORED
    assert _decode(headers("reflexe.v1.AdmissionOverdue"), b"") is IGNORED


def test_records_the_live_path_refuses_are_none():
    assert _decode(headers("reflexe.v1.OfferMade"), b"\xff\xff\xff") is None  # does not parse
    assert _decode(headers("reflexe.v1.NoSuchEvent"), b"") is None
    assert _decode([("content-type", b"application/protobuf")], b"") is None  # no type
    assert _decode(headers("reflexe.v1.OfferMade"), None) is None  # a tombstone


def test_the_folded_types_are_exactly_those_the_fold_reads():
    samples = [
        cpb.CapacityDeclared(had_finess="340000108", department="34", declared_at=ts(AT), authorised_places=10),
        *(cls(header=header()) for cls in (
            pb.ReferralRequested, pb.EdExitRecorded, pb.ReferralDeclaredIneligible, pb.OfferMade, pb.OfferAccepted,
            pb.OfferDeclined, pb.OfferExpired, pb.OfferWithdrawn, pb.EvaluationConfirmed, pb.AcceptanceWithdrawn,
            pb.AvisGiven, pb.ReferralEscalated, pb.PatientAdmitted, pb.PatientDischarged, pb.ReferralCancelled,
            pb.OfferUnanswered, pb.AdmissionOverdue, pb.SearchWidened, pb.DeskOfferRequested, pb.ReferralCompleted,
            pb.ReferralRequestUpdated)),
    ]
    for message in samples:
        if isinstance(message, pb.EdExitRecorded):
            message.exited_at.CopyFrom(ts(AT))
        if isinstance(message, pb.ReferralRequested):
            message.request.requested_at.CopyFrom(ts(AT))
        folded = bool(fold(message))
        assert folded == (message.DESCRIPTOR.full_name in FOLDED_TYPES), message.DESCRIPTOR.full_name
