"""Hypothesis against the pure part of every consumer's decode path: the envelope (`unwrap`), the
inbound topics' sender check, and what each service derives from a decoded envelope without a
database (notify's notices and desk events, the indicators' fold, the referral codec). Anything
other than PoisonRecord escaping them is a defect: the idempotent consumer would retry a record
that can never succeed instead of dead-lettering it with its reason.

On the real broker and database, tests/integration/fuzz/test_dead_letters_fuzz.py sends generated bad
records to every consumer, which must dead-letter them and carry on.
REFLEXE_FUZZ_RECORDS sets the examples per property (default 200); derandomized for CI.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reflexe.v1 import referral_pb2, submission_pb2

from reflexe_common.envelope import Envelope, PoisonRecord, unwrap
from reflexe_common.inbox import Record
from reflexe_common.topics import INBOUND_CAPACITY, INBOUND_REFERRALS
from reflexe_indicators.domain.facts import fold as fold_event
from reflexe_notify.adapters.events import desk_event_from, notice_from
from reflexe_referral.adapters.codec import request_from_proto
from tests.support.fuzz_records import arbitrary_headers, records

EXAMPLES = int(os.environ.get("REFLEXE_FUZZ_RECORDS", "200"))
fuzz = settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def decoded(headers, value) -> Envelope | None:
    """The envelope, or None for a record unwrap refuses (PoisonRecord, with a reason)."""
    try:
        return unwrap(headers, value)
    except PoisonRecord as refused:
        assert str(refused), "a dead letter needs its reason"
        return None


@fuzz
@given(headers=arbitrary_headers(), value=st.one_of(st.none(), st.binary(max_size=256)))
def test_unwrap_refuses_arbitrary_records_with_a_reason(headers, value):
    decoded(headers, value)


@fuzz
@given(record=records())
def test_every_decoded_envelope_is_usable_downstream(record):
    """What unwrap lets through must not break the code that reads it: times convert, text has
    no NUL, ids are not empty."""
    envelope = decoded(*record)
    if envelope is None:
        return
    assert envelope.id and envelope.type and envelope.source
    envelope.time.astimezone()
    for descriptor_field, value in envelope.message.ListFields():
        assert "\x00" not in str(value) or not isinstance(value, str), descriptor_field.name


@fuzz
@given(record=records(), sender=st.sampled_from(["340000017", "310000021", "2A0000030"]),
       topic=st.one_of(st.none(), st.text(max_size=40)))
def test_inbound_sender_check_only_refuses_with_poison(record, sender, topic):
    envelope = decoded(*record)
    if envelope is None:
        return
    for kind in (INBOUND_REFERRALS, INBOUND_CAPACITY):
        record_topic = topic if topic is not None else kind.topic(sender).name
        try:
            kind.verify_sender(Record(record_topic, 0, 0, None, b"", []), envelope)
        except PoisonRecord as refused:
            assert str(refused)


@fuzz
@given(record=records())
def test_notify_derives_notices_and_desk_events_or_refuses(record):
    envelope = decoded(*record)
    if envelope is None:
        return
    for derive in (notice_from, desk_event_from):
        try:
            derive(envelope)
        except PoisonRecord:
            pass


@fuzz
@given(record=records())
def test_indicators_fold_or_refuse(record):
    envelope = decoded(*record)
    if envelope is None:
        return
    try:
        fold_event(envelope.message)
    except PoisonRecord:
        pass


@fuzz
@given(record=records([referral_pb2.ReferralRequested.DESCRIPTOR, submission_pb2.SubmitReferral.DESCRIPTOR]))
def test_referral_codec_reads_a_request_or_says_which_code_is_wrong(record):
    """The submission consumer and the matcher turn ValueError into PoisonRecord: nothing else
    may come out of the codec."""
    envelope = decoded(*record)
    if envelope is None or not hasattr(envelope.message, "request"):
        return
    try:
        request_from_proto(envelope.message.request)
    except ValueError:
        pass
