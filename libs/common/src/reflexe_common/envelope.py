"""CloudEvents binary-mode envelope for protobuf events on Kafka.

A record's value is the serialized protobuf message; the CloudEvents attributes travel as
headers (ce_id, ce_type, ce_source, ce_specversion, ce_time, content-type). ce_type is the
message's full protobuf name, so a consumer finds the class without a registry of its own.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from google.protobuf import message_factory, symbol_database
from google.protobuf.message import DecodeError, Message
from google.protobuf.timestamp_pb2 import Timestamp

# Importing the generated modules registers every contract in the default descriptor pool.
from reflexe.v1 import capacity_pb2, matching_pb2, referral_pb2, submission_pb2  # noqa: F401

CONTENT_TYPE = "application/protobuf"
SPEC_VERSION = "1.0"
Headers = list[tuple[str, bytes]]


class PoisonRecord(Exception):
    """A record that can never be processed; it goes to the dead-letter topic with this reason."""


@dataclass(frozen=True)
class Envelope:
    id: str
    type: str
    source: str
    time: datetime
    message: Message

    def headers(self) -> Headers:
        return [
            ("ce_id", self.id.encode()),
            ("ce_type", self.type.encode()),
            ("ce_source", self.source.encode()),
            ("ce_specversion", SPEC_VERSION.encode()),
            ("ce_time", self.time.isoformat().encode()),
            ("content-type", CONTENT_TYPE.encode()),
        ]

    def value(self) -> bytes:
        return self.message.SerializeToString(deterministic=True)


def wrap(message: Message, source: str, time: datetime | None = None, event_id: str | None = None) -> Envelope:
    return Envelope(
        id=event_id or str(uuid.uuid4()),
        type=message.DESCRIPTOR.full_name,
        source=source,
        time=time or datetime.now(UTC),
        message=message,
    )


def message_class(type_name: str) -> type[Message]:
    try:
        descriptor = symbol_database.Default().pool.FindMessageTypeByName(type_name)
    except KeyError as exc:
        raise PoisonRecord(f"unknown ce_type {type_name!r}") from exc
    return message_factory.GetMessageClass(descriptor)


def unwrap(headers: Headers | None, value: bytes | None) -> Envelope:
    """Decode a Kafka record; raise PoisonRecord with a readable reason when it cannot be."""
    attrs = {k: v for k, v in (headers or [])}
    missing = [h for h in ("ce_id", "ce_type", "ce_source", "ce_specversion", "ce_time") if h not in attrs]
    if missing:
        raise PoisonRecord(f"missing CloudEvents headers: {', '.join(missing)}")
    try:
        text = {k: attrs[k].decode() for k in ("ce_id", "ce_type", "ce_source", "ce_specversion", "ce_time")}
        content_type = attrs.get("content-type", CONTENT_TYPE.encode()).decode()
    except UnicodeDecodeError as exc:
        raise PoisonRecord("CloudEvents headers are not UTF-8") from exc
    if text["ce_specversion"] != SPEC_VERSION:
        raise PoisonRecord(f"unsupported ce_specversion {text['ce_specversion']!r}")
    if content_type != CONTENT_TYPE:
        raise PoisonRecord(f"unsupported content-type {content_type!r}")
    try:
        time = datetime.fromisoformat(text["ce_time"])
    except ValueError as exc:
        raise PoisonRecord(f"ce_time is not an RFC 3339 time: {text['ce_time']!r}") from exc
    if time.tzinfo is None:
        raise PoisonRecord("ce_time has no time zone")
    if value is None:
        raise PoisonRecord("record has no value")
    message = message_class(text["ce_type"])()
    try:
        message.ParseFromString(value)
    except DecodeError as exc:
        raise PoisonRecord(f"value is not a valid {text['ce_type']}: {exc}") from exc
    return Envelope(id=text["ce_id"], type=text["ce_type"], source=text["ce_source"], time=time, message=message)


def ts(value: datetime | None) -> Timestamp:
    """A protobuf Timestamp from an aware datetime (None → unset)."""
    out = Timestamp()
    if value is not None:
        out.FromDatetime(value.astimezone(UTC))
    return out


def dt(value: Timestamp | None) -> datetime | None:
    """An aware UTC datetime from a protobuf Timestamp field (unset → None)."""
    if value is None or (value.seconds == 0 and value.nanos == 0):
        return None
    return value.ToDatetime(tzinfo=UTC)
