"""Hypothesis strategies for Kafka records a consumer may be handed: arbitrary headers and bytes,
and structurally valid CloudEvents envelopes carrying garbage protobuf payloads or messages of
the platform's contracts with garbage field values (text with NUL and any unicode, integers at
their limits, unknown enum numbers, Timestamps out of range), mixed with realistic codes so
that the handlers' deeper checks are reached too."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import strategies as st
from reflexe.v1 import capacity_pb2, matching_pb2, referral_pb2, submission_pb2

from reflexe_common.envelope import CONTENT_TYPE, SPEC_VERSION

Headers = list[tuple[str, bytes | None]]
CONTRACTS: list[Descriptor] = [d for module in (capacity_pb2, matching_pb2, referral_pb2, submission_pb2)
                               for d in module.DESCRIPTOR.message_types_by_name.values()]
CE_HEADERS = ("ce_id", "ce_type", "ce_source", "ce_specversion", "ce_time", "content-type")

# Codes the handlers know, so that generated messages get past the first checks sometimes.
REALISTIC = ["34", "31", "2A", "975", "99", "34172", "31555", "34999", "03", "04", "09", "14", "OPEN", "CLOSED",
             "FULL", "ED", "WARD", "HOME", "EHPAD", "F", "M", "U", "WITHIN_24H", "PLANNED", "SYRINGE_DRIVER",
             "OXYGEN", "PATIENT_REFUSAL", "NO_CAPACITY", "2026-11-22", "2026-02-30", "not a date", "",
             "340000017", "340780477", "a" * 64, "0" * 64, "hospital", "desk"]
texts = st.one_of(st.sampled_from(REALISTIC), st.text(max_size=24), st.uuids().map(str))
_INTS = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1), FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1), FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1), FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1), FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1), FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}
# Timestamps: mostly plausible (around now), sometimes anything a 64-bit field holds.
timestamps = st.one_of(
    st.builds(Timestamp, seconds=st.integers(1_700_000_000, 1_900_000_000), nanos=st.integers(0, 999_999_999)),
    st.builds(Timestamp, seconds=st.integers(-(2**63), 2**63 - 1), nanos=st.integers(-(2**31), 2**31 - 1)),
)


def _integers(low: int, high: int) -> st.SearchStrategy[int]:
    return st.one_of(st.integers(-5, 1000).filter(lambda v: low <= v <= high), st.integers(low, high),
                     st.sampled_from([low, high]))


def _scalar(field: FieldDescriptor) -> st.SearchStrategy:
    if field.type in _INTS:
        return _integers(*_INTS[field.type])
    if field.type == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if field.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return st.floats(width=32 if field.type == FieldDescriptor.TYPE_FLOAT else 64)
    if field.type == FieldDescriptor.TYPE_ENUM:
        return st.one_of(st.sampled_from([v.number for v in field.enum_type.values]), _integers(-(2**31), 2**31 - 1))
    if field.type == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=32)
    return texts


def messages(descriptor: Descriptor, depth: int = 0) -> st.SearchStrategy[Message]:
    """A message of this contract with arbitrary values in any subset of its fields."""
    if descriptor.full_name == Timestamp.DESCRIPTOR.full_name:
        return timestamps
    cls = message_factory.GetMessageClass(descriptor)
    if depth > 3:
        return st.just(cls())
    optional = {}
    for field in descriptor.fields:
        if field.message_type is not None:
            if field.message_type.GetOptions().map_entry:
                continue
            value = st.deferred(lambda f=field: messages(f.message_type, depth + 1))
        else:
            value = _scalar(field)
        optional[field.name] = st.lists(value, max_size=3) if field.is_repeated else value
    return st.fixed_dictionaries({}, optional=optional).map(lambda fields: cls(**fields))


def ce_times() -> st.SearchStrategy[str]:
    zones = st.sampled_from([UTC, timezone(timedelta(hours=1)), timezone(timedelta(hours=-14)), None])
    return st.one_of(
        st.builds(lambda d, z: d.replace(tzinfo=z).isoformat(), st.datetimes(), zones),
        st.sampled_from(["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "yesterday", ""]),
        st.just(datetime.now(UTC).isoformat()),
    )


def envelope_headers(ce_type: st.SearchStrategy[str]) -> st.SearchStrategy[Headers]:
    """CloudEvents headers that are right in form, with values that may still be wrong."""
    return st.builds(
        lambda i, t, s, v, time, ct: [("ce_id", i), ("ce_type", t), ("ce_source", s), ("ce_specversion", v),
                                      ("ce_time", time), ("content-type", ct)],
        st.one_of(st.uuids().map(lambda u: str(u).encode()), st.binary(max_size=12)),
        ce_type.map(str.encode),
        st.one_of(st.just(b"fuzz"), st.binary(max_size=12)),
        st.one_of(st.just(SPEC_VERSION.encode()), st.sampled_from([b"0.3", b""])),
        ce_times().map(str.encode),
        st.one_of(st.just(CONTENT_TYPE.encode()), st.sampled_from([b"application/json", b""])),
    )


def arbitrary_headers() -> st.SearchStrategy[Headers]:
    names = st.one_of(st.sampled_from(CE_HEADERS), st.text(max_size=10))
    return st.lists(st.tuples(names, st.one_of(st.none(), st.binary(max_size=24))), max_size=8)


contract_names = st.sampled_from([d.full_name for d in CONTRACTS])


def records(descriptors: list[Descriptor] | None = None) -> st.SearchStrategy[tuple[Headers, bytes | None]]:
    """(headers, value) of a record: anything; an envelope around garbage bytes; or an envelope
    around a contract message with garbage values (of the given contracts, the ones a topic
    carries, or of another)."""
    wanted = descriptors or CONTRACTS
    typed = st.sampled_from(wanted).flatmap(
        lambda d: st.tuples(envelope_headers(st.just(d.full_name)), messages(d).map(lambda m: m.SerializeToString())))
    return st.one_of(
        st.tuples(arbitrary_headers(), st.one_of(st.none(), st.binary(max_size=64))),
        st.tuples(envelope_headers(st.one_of(contract_names, st.text(max_size=20))), st.binary(max_size=64)),
        typed,
        typed,  # twice: the values reach the handlers, where the defects hide
    )


def fresh_id() -> bytes:
    return str(uuid.uuid4()).encode()
