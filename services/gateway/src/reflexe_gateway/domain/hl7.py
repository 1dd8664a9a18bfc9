"""Reading an IHE PAM FR ADT message (HL7 v2.5) into what the platform may know of it.

Parsing is python-hl7's; this module picks the few fields the gateway uses and refuses, with the
HL7 error location (e.g. PID^1^3), what it cannot use. Whatever the input, it returns an
`AdtMessage` or raises `Rejection`: any other exception would be a bug (the fuzz tests say so).

Nothing here keeps a name, an INS/NIR, a birth date or an address: only the local identifier of
PID-3 (type PI) and its authority leave this module, and only to be pseudonymised at once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import hl7

from reflexe_common.finess import is_finess

# HL7 table 0357 (message error condition codes).
SEGMENT_SEQUENCE_ERROR = "100"
REQUIRED_FIELD_MISSING = "101"
DATA_TYPE_ERROR = "102"
TABLE_VALUE_NOT_FOUND = "103"
UNSUPPORTED_MESSAGE_TYPE = "200"
UNSUPPORTED_VERSION = "203"
UNKNOWN_KEY_IDENTIFIER = "204"
NOT_AUTHORIZED = "207"  # "application internal error" in 0357; the nearest for an unknown sender
APPLICATION_ERROR = "207"

ERROR_TEXT = {
    SEGMENT_SEQUENCE_ERROR: "Segment sequence error",
    REQUIRED_FIELD_MISSING: "Required field missing",
    DATA_TYPE_ERROR: "Data type error",
    TABLE_VALUE_NOT_FOUND: "Table value not found",
    UNSUPPORTED_MESSAGE_TYPE: "Unsupported message type",
    UNSUPPORTED_VERSION: "Unsupported version id",
    UNKNOWN_KEY_IDENTIFIER: "Unknown key identifier",
    APPLICATION_ERROR: "Application internal error",
}

# French hospital systems send local time without an offset (IHE PAM FR): read it as Paris time.
LOCAL_TIME = ZoneInfo("Europe/Paris")
_DTM = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(?:\.\d{1,4})?([+-]\d{4})?$")
_UUID = re.compile(r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$")
MAX_CONTROL_ID = 199
MAX_IDENTIFIER = 250
# PMSI "mode de sortie" 9 is death; HL7 table 0112 has no fixed code for it, some systems send DC/DEC.
DEATH_DISPOSITIONS = frozenset({"9", "DC", "DEC", "DECES", "DCD"})
CANCELLATIONS = {"A11": "A01", "A12": "A02", "A13": "A03"}  # cancellation trigger -> the event it cancels


class Rejection(Exception):
    """The message cannot be used. ack: AR (rejected: not a message we take) or AE (an error in
    its content); location: ERR-2 (segment^sequence^field), e.g. "PID^1^3"."""

    def __init__(self, ack: str, code: str, location: str, text: str) -> None:
        super().__init__(text)
        self.ack, self.code, self.location, self.text = ack, code, location, text


@dataclass(frozen=True)
class Header:
    """MSH, enough to answer (even an AE) and to know the sender."""

    sending_application: str
    sending_facility: str  # as sent; the FINESS is checked separately
    receiving_application: str
    receiving_facility: str
    message_type: str
    trigger: str
    control_id: str
    processing_id: str
    version: str


@dataclass(frozen=True)
class AdtMessage:
    header: Header
    finess: str
    trigger: str
    event_at: datetime  # when it happened: ZBE-2, else EVN-6, else EVN-2, else MSH-7
    patient_id: str  # PID-3 of type PI: pseudonymised by the caller, never stored
    patient_authority: str
    patient_class: str  # PV1-2: E emergency, I inpatient, O outpatient...
    death: bool  # PV1-36 death disposition or PID-30 = Y
    movement_id: str  # ZBE-1: what a cancellation (A11/A12/A13) names
    movement_action: str  # ZBE-4: INSERT, UPDATE or CANCEL
    referral_hint: str | None  # PV1-5 when it is a platform referral id (an HAD's admission)

    @property
    def cancels(self) -> str | None:
        """The trigger this message cancels, if it is a cancellation."""
        return CANCELLATIONS.get(self.trigger)


def _field(segment, number: int, separators: str) -> list[list[str]]:
    """Field `number` of a segment as repetitions of components (first subcomponent each is kept
    in `_subcomponents`). MSH counts its field separator as MSH-1, as HL7 does. python-hl7 splits
    segments and fields; repetitions and components are split here on the message's own
    separators, so that every field has one shape whatever the library's nesting."""
    if segment is None:
        return [[""]]
    try:
        raw = str(segment[number])
    except (IndexError, TypeError):
        return [[""]]
    component, repetition = separators[0], separators[1]
    return [rep.split(component) for rep in raw.split(repetition)]


def _first(segment, number: int, separators: str, component: int = 0) -> str:
    reps = _field(segment, number, separators)
    parts = reps[0]
    return parts[component] if len(parts) > component else ""


def _segments(message: hl7.Message, name: str) -> list:
    return [s for s in message if len(s) and str(s[0]) == name]


def parse_time(value: str, location: str) -> datetime:
    match = _DTM.fullmatch(value.strip())
    if not match:
        raise Rejection("AE", DATA_TYPE_ERROR, location, f"{location} is not an HL7 date/time")
    year, month, day, hour, minute, second, offset = match.groups()
    try:
        naive = datetime(int(year), int(month or 1), int(day or 1), int(hour or 0), int(minute or 0), int(second or 0))
        if offset:
            sign = 1 if offset[0] == "+" else -1
            delta = timedelta(hours=int(offset[1:3]), minutes=int(offset[3:5]))
            if delta >= timedelta(hours=24):
                raise ValueError("offset")
            moment = (naive - sign * delta).replace(tzinfo=UTC)
        else:
            moment = naive.replace(tzinfo=LOCAL_TIME).astimezone(UTC)
        if not 1900 <= moment.year <= 2200:
            raise ValueError("year")
    except (ValueError, OverflowError) as exc:
        raise Rejection("AE", DATA_TYPE_ERROR, location, f"{location} is not a valid date/time") from exc
    return moment


def _clean(value: str) -> str:
    """A value echoed in an ACK or stored: no separators, no control characters."""
    return re.sub(r"[\x00-\x1f|^~\\&]", "", value)[:MAX_CONTROL_ID]


def read_header(raw: str) -> Header:
    """MSH read by hand: enough to answer even when the library cannot parse the rest."""
    first = raw.split("\r", 1)[0].split("\n", 1)[0]
    if not first.startswith("MSH") or len(first) < 8:
        raise Rejection("AR", SEGMENT_SEQUENCE_ERROR, "MSH^1", "the message does not start with an MSH segment")
    sep, encoding = first[3], first[4:8]
    if sep.isalnum() or sep in "\r\n" or len(set(encoding + sep)) != 5:
        raise Rejection("AR", DATA_TYPE_ERROR, "MSH^1^2", "MSH-1/MSH-2 are not valid separators")
    fields = first.split(sep)
    component = encoding[0]

    def get(number: int, part: int = 0) -> str:
        # fields[0] is "MSH", fields[1] the encoding characters (MSH-2): MSH-n is fields[n-1].
        value = fields[number - 1] if len(fields) > number - 1 else ""
        parts = value.split(component)
        return _clean(parts[part]) if len(parts) > part else ""

    return Header(sending_application=get(3), sending_facility=get(4), receiving_application=get(5),
                  receiving_facility=get(6), message_type=get(9, 0), trigger=get(9, 1), control_id=get(10),
                  processing_id=get(11), version=get(12))


def sender_finess(header: Header, raw: str) -> str:
    """The FINESS in MSH-4 (HD: namespace^universal id^type; PAM FR senders put it in either)."""
    first = raw.split("\r", 1)[0].split("\n", 1)[0]
    sep, component = first[3], first[4]
    fields = first.split(sep)
    parts = fields[3].split(component) if len(fields) > 3 else []
    for part in parts[:2]:
        if is_finess(part):
            return part
    raise Rejection("AR", UNKNOWN_KEY_IDENTIFIER, "MSH^1^4", "MSH-4 carries no FINESS (9 characters whose 9th is the "
                                                             "Luhn key of the first eight)")


def read_adt(raw: str) -> AdtMessage:
    """An ADT message as the gateway uses it, or a Rejection naming the field."""
    header = read_header(raw)
    if not header.control_id:
        raise Rejection("AR", REQUIRED_FIELD_MISSING, "MSH^1^10", "MSH-10 (message control id) is required")
    if not header.version.startswith("2.5"):
        raise Rejection("AR", UNSUPPORTED_VERSION, "MSH^1^12", f"version {header.version!r} is not 2.5")
    if header.message_type != "ADT":
        raise Rejection("AR", UNSUPPORTED_MESSAGE_TYPE, "MSH^1^9", f"message type {header.message_type!r} is not ADT")
    if not re.fullmatch(r"A[0-9]{2}", header.trigger):
        raise Rejection("AR", UNSUPPORTED_MESSAGE_TYPE, "MSH^1^9^2", "MSH-9.2 is not an ADT trigger event")
    finess = sender_finess(header, raw)
    try:
        message = hl7.parse(raw.replace("\n", "\r"))
    except Exception as exc:  # python-hl7 raises several types on malformed input
        raise Rejection("AR", SEGMENT_SEQUENCE_ERROR, "MSH^1", "the message cannot be parsed as HL7") from exc
    try:
        return _read_parsed(message, header, finess, _separators(raw))
    except Rejection:
        raise
    except Exception as exc:  # a shape python-hl7 accepted but not as a field tree we expect
        raise Rejection("AE", DATA_TYPE_ERROR, "MSH^1", "the message's structure cannot be read") from exc


def _read_parsed(message: hl7.Message, header: Header, finess: str, separators: str) -> AdtMessage:
    sep = separators
    pids, pv1s, evns, zbes = (_segments(message, n) for n in ("PID", "PV1", "EVN", "ZBE"))
    if not pids:
        raise Rejection("AE", REQUIRED_FIELD_MISSING, "PID^1", "the PID segment is required")
    patient_id, authority = _local_identifier(pids[0], sep)
    pv1 = pv1s[0] if pv1s else None
    zbe = zbes[0] if zbes else None
    evn = evns[0] if evns else None
    event_at = None
    for segment, number, name in ((zbe, 2, "ZBE^1^2"), (evn, 6, "EVN^1^6"), (evn, 2, "EVN^1^2")):
        value = _first(segment, number, sep)
        if value:
            event_at = parse_time(value, name)
            break
    if event_at is None:
        msh_time = _first(message.segment("MSH"), 7, sep)
        if not msh_time:
            raise Rejection("AE", REQUIRED_FIELD_MISSING, "EVN^1^2", "no event time (ZBE-2, EVN-6, EVN-2 or MSH-7)")
        event_at = parse_time(msh_time, "MSH^1^7")
    disposition = _first(pv1, 36, sep).upper()
    death_indicator = _first(pids[0], 30, sep).upper()
    hint = _first(pv1, 5, sep)
    action = _first(zbe, 4, sep).upper()
    if action and action not in ("INSERT", "UPDATE", "CANCEL"):
        raise Rejection("AE", TABLE_VALUE_NOT_FOUND, "ZBE^1^4", "ZBE-4 must be INSERT, UPDATE or CANCEL")
    return AdtMessage(
        header=header, finess=finess, trigger=header.trigger, event_at=event_at,
        patient_id=patient_id, patient_authority=authority,
        patient_class=_clean(_first(pv1, 2, sep)).upper()[:1],
        death=disposition in DEATH_DISPOSITIONS or death_indicator == "Y",
        movement_id=_clean(_first(zbe, 1, sep)),
        movement_action=action or ("CANCEL" if header.trigger in CANCELLATIONS else "INSERT"),
        referral_hint=hint.lower().replace("-", "") if _UUID.fullmatch(hint) else None,
    )


def _separators(raw: str) -> str:
    """Component, repetition, escape, subcomponent characters (MSH-2), as read_header checked them."""
    return raw[4:8]


def _local_identifier(pid, separators: str) -> tuple[str, str]:
    """PID-3's identifier of type PI (the hospital's own patient number) and its authority."""
    for parts in _field(pid, 3, separators):
        if len(parts) < 5 or parts[4].upper() != "PI":
            continue
        identifier = parts[0]
        # HD: namespace & universal id (OID) & type: the OID when there is one, it is unique.
        authority_parts = parts[3].split(separators[3])
        authority = authority_parts[1] if len(authority_parts) > 1 and authority_parts[1] else authority_parts[0]
        if not identifier or len(identifier) > MAX_IDENTIFIER:
            raise Rejection("AE", DATA_TYPE_ERROR, "PID^1^3^1", "PID-3 identifier of type PI is empty or too long")
        if not authority:
            raise Rejection("AE", REQUIRED_FIELD_MISSING, "PID^1^3^4", "PID-3 identifier of type PI has no assigning authority")
        return identifier, authority
    raise Rejection("AE", REQUIRED_FIELD_MISSING, "PID^1^3", "PID-3 has no identifier of type PI (the hospital's own patient id)")
