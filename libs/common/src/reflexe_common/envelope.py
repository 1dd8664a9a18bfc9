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
    # Kafka lets a header carry no value at all (null): as good as missing.
    missing = [h for h in ("ce_id", "ce_type", "ce_source", "ce_specversion", "ce_time") if attrs.get(h) is None]
    if missing:
        raise PoisonRecord(f"missing CloudEvents headers: {', '.join(missing)}")
    try:
        text = {k: attrs[k].decode() for k in ("ce_id", "ce_type", "ce_source", "ce_specversion", "ce_time")}
        declared = attrs.get("content-type")
        content_type = CONTENT_TYPE if declared is None else declared.decode()
    except UnicodeDecodeError as exc:
        raise PoisonRecord("CloudEvents headers are not UTF-8") from exc
    for name in ("ce_id", "ce_type", "ce_source"):
        if not text[name] or "\x00" in text[name]:
            # An empty ce_id would collide in every consumer's inbox; PostgreSQL stores no NUL.
            raise PoisonRecord(f"{name} is empty or holds a NUL character")
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
    try:
        time.astimezone(UTC)
    except OverflowError as exc:  # e.g. 0001-01-01T00:00+01:00, which is before year 1 in UTC
        raise PoisonRecord(f"ce_time is out of range in UTC: {text['ce_time']!r}") from exc
    if value is None:
        raise PoisonRecord("record has no value")
    message = message_class(text["ce_type"])()
    try:
        message.ParseFromString(value)
    except DecodeError as exc:
        raise PoisonRecord(f"value is not a valid {text['ce_type']}: {exc}") from exc
    _check_values(message, text["ce_type"])
    return Envelope(id=text["ce_id"], type=text["ce_type"], source=text["ce_source"], time=time, message=message)


def _check_values(message: Message, path: str) -> None:
    """What protobuf parses but no handler can use: a Timestamp outside its defined range (years
    1-9999), which fails when converted to a datetime, and a NUL character, which PostgreSQL
    refuses in text. Refused here, once, so that every consumer dead-letters them with a reason."""
    if isinstance(message, Timestamp):
        try:
            message.ToDatetime()
        except (ValueError, OverflowError) as exc:
            raise PoisonRecord(f"{path} is not a valid time: {exc}") from exc
        return
    for field, value in message.ListFields():
        where = f"{path}.{field.name}"
        items = value if field.is_repeated else [value]
        for item in items:
            if isinstance(item, Message):
                _check_values(item, where)
            elif isinstance(item, str) and "\x00" in item:
                raise PoisonRecord(f"{where} holds a NUL character")


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
