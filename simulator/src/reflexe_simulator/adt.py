"""The HL7 v2.5 door (IHE PAM FR over MLLP, docs/integration-hl7.md), as a hospital's or an
HAD's interface engine uses it.

Messages carry what the establishment's own system knows (names, NIR, birth date in PID: the
gateway must drop them, and the privacy scan checks that it does), in the PAM FR shape:
MSH-12 ``2.5^FRA^2.11``, EVN, PID-3 with the local number (type PI) and the INS-NIR, PV1 with
the visit number, ZBE for the movement. MLLP framing and parsing of the ACKs are python-hl7's
(``hl7.mllp``); each message waits for its ACK, which must be AA.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import hl7
from hl7.mllp import InvalidBlockError, open_hl7_connection

from reflexe_simulator.doors import PatientIdDomain
from reflexe_simulator.traffic import PatientRecord

log = logging.getLogger("reflexe_simulator.adt")
PARIS = ZoneInfo("Europe/Paris")
INS_NIR_AUTHORITY = "ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.8&ISO"
ENCODING = "latin-1"  # MSH-18 8859/1, as French hospital systems send
PV1_FIELDS = 45  # PV1-45: discharge date/time
STRUCTURE = {"A01": "ADT_A01", "A03": "ADT_A03", "A06": "ADT_A06"}
_ESCAPES = {"\\": "\\E\\", "|": "\\F\\", "^": "\\S\\", "&": "\\T\\", "~": "\\R\\"}


def _esc(value: str) -> str:
    """A value inside a component: HL7 escapes for the separators (names such as D'ARC pass as is)."""
    return "".join(_ESCAPES.get(c, c) for c in value.replace("\r", " ").replace("\n", " "))


def unit_code(unit: str) -> str:
    """A unit's code in the establishment's structure (UF): stable for its name."""
    return f"{sum(map(ord, unit)) % 9000 + 1000}"


def visit_number(finess: str, key: str) -> str:
    """The establishment's visit number (NDA, PV1-19) of one stay."""
    return f"NDA{int(hashlib.sha256(f'{finess}|{key}'.encode()).hexdigest()[:12], 16) % 10**9:09d}"


def hl7_time(moment: datetime) -> str:
    """Local Paris time without an offset, as IHE PAM FR systems send it."""
    return moment.astimezone(PARIS).strftime("%Y%m%d%H%M%S")


@dataclass(frozen=True)
class Movement:
    """One ADT message to build: who sends it, about whom, what happened."""

    trigger: str  # A01, A03, A06
    sender_finess: str
    patient: PatientRecord
    at: datetime
    patient_class: str  # PV1-2: E emergency, I inpatient
    unit: str  # PV1-3 point of care, ZBE-7 responsible unit
    visit_number: str  # PV1-19 (NDA)
    referral_id: str = ""  # PV1-5: the platform's referral id, when an HAD reports on it
    movement_id: str = ""
    control_id: str = ""


def build_message(movement: Movement) -> str:
    """The message as sent (segments separated by CR), checked by python-hl7's parser."""
    m = movement
    domain = PatientIdDomain.of(m.sender_finess)
    control_id = m.control_id or uuid.uuid4().hex[:20]
    movement_id = m.movement_id or f"MVT{uuid.uuid4().hex[:12].upper()}"
    when = hl7_time(m.at)
    record = m.patient
    sex = "M" if record.nir.startswith("1") else "F"
    msh = ["MSH", "^~\\&", "SIM_SIH", m.sender_finess, "REFLEXE", "REFLEXE", when, "",
           f"ADT^{m.trigger}^{STRUCTURE.get(m.trigger, 'ADT_A01')}", control_id, "P", "2.5^FRA^2.11",
           "", "", "", "", "FRA", "8859/1"]
    evn = ["EVN", "", when, "", "", "", when]
    pid = ["PID", "1", "",
                f"{_esc(domain.local_id(record.nir))}^^^{domain.namespace}&{domain.oid}&ISO^PI"
                f"~{record.nir}^^^{INS_NIR_AUTHORITY}^INS",
                "", f"{_esc(record.family_name)}^{_esc(record.given_name)}^^^^^L", "",
                record.birth_date.strftime("%Y%m%d"), sex]
    pv1 = [""] * (PV1_FIELDS + 1)
    pv1[0:4] = ["PV1", "1", m.patient_class, f"{_esc(m.unit)}^^^{m.sender_finess}"]
    pv1[5] = m.referral_id
    pv1[19] = f"{_esc(m.visit_number)}^^^{domain.namespace}&{domain.oid}&ISO^AN"
    pv1[44] = when if m.trigger != "A03" else ""
    pv1[45] = when if m.trigger == "A03" else ""
    # ZBE-5 N: a current movement, not a historic one; ZBE-7: the unit responsible (XON, type UF).
    zbe = ["ZBE", f"{movement_id}^{domain.namespace}", when, "", "INSERT", "N", "",
           f"{_esc(m.unit)}^^^^^^UF^^^{unit_code(m.unit)}"]
    text = "\r".join("|".join(segment) for segment in (msh, evn, pid, pv1, zbe)) + "\r"
    hl7.parse(text)  # a message python-hl7 cannot read is a bug here, not something to send
    return text


@dataclass(frozen=True)
class Ack:
    code: str  # MSA-1: AA, AE, AR; "" when no ACK came back
    error: str = ""  # ERR-2 and ERR-8 of a refusal, or why nothing came back

    @property
    def accepted(self) -> bool:
        return self.code == "AA"


def read_ack(message: hl7.Message, control_id: str) -> Ack:
    msa = message.segment("MSA")
    code, echoed = str(msa[1]), str(msa[2])
    if echoed != control_id:
        return Ack("", f"ACK for {echoed!r}, not for {control_id!r}")
    if code == "AA":
        return Ack(code)
    try:
        err = message.segment("ERR")
        return Ack(code, f"{err[2]} {err[8]}".strip())
    except KeyError:
        return Ack(code, "no ERR segment")


class MllpSender:
    """One persistent MLLP connection per sending system (as an interface engine keeps one),
    messages sent one at a time on it, each checked against its ACK. A connection that fails is
    opened again and the message sent again (same MSH-10: the gateway answers a duplicate with
    the same ACK and no second effect); an AE (not recorded) is sent again too; an AR is not."""

    def __init__(self, host: str, port: int, counters: Any = None, attempts: int = 4, backoff: float = 0.5,
                 timeout: float = 15.0) -> None:
        self.host, self.port = host, port
        self.counters = counters
        self.attempts, self.backoff, self.timeout = attempts, backoff, timeout
        self._connections: dict[str, tuple[Any, Any]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def _count(self, name: str) -> None:
        if self.counters is not None:
            self.counters.inc(name)

    async def send(self, sender: str, message: str) -> Ack:
        control_id = message.split("\r", 1)[0].split("|")[9]
        delay, ack = self.backoff, Ack("", "not sent")
        async with self._locks.setdefault(sender, asyncio.Lock()):
            for attempt in range(1, self.attempts + 1):
                try:
                    ack = await asyncio.wait_for(self._exchange(sender, message, control_id), self.timeout)
                except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError, KeyError,
                        IndexError, hl7.ParseException, InvalidBlockError) as exc:
                    await self._drop(sender)
                    ack = Ack("", f"{type(exc).__name__}: {exc}".strip())
                if ack.code in ("AA", "AR") or attempt == self.attempts:
                    break
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
        self._count("hl7_sent")
        if not ack.accepted:
            self._count("hl7_not_accepted")
            log.warning("HL7 message %s from %s to %s:%d not accepted: %s %s", control_id, sender, self.host, self.port,
                        ack.code or "no ACK", ack.error)
        return ack

    async def _exchange(self, sender: str, message: str, control_id: str) -> Ack:
        if sender not in self._connections:
            self._connections[sender] = await open_hl7_connection(self.host, self.port, encoding=ENCODING,
                                                                  encoding_errors="replace")
        reader, writer = self._connections[sender]
        writer.writemessage(message)
        await writer.drain()
        return read_ack(await reader.readmessage(), control_id)

    async def _drop(self, sender: str) -> None:
        connection = self._connections.pop(sender, None)
        if connection is not None:
            writer = connection[1]
            writer.close()
            try:
                await writer.wait_closed()
            except OSError:
                pass

    async def aclose(self) -> None:
        for sender in list(self._connections):
            await self._drop(sender)


class DryRunSender(MllpSender):
    """Builds and checks every message, sends none: every one is acknowledged AA locally."""

    def __init__(self, counters: Any = None) -> None:
        super().__init__("dry-run", 0, counters)

    async def _exchange(self, sender: str, message: str, control_id: str) -> Ack:
        log.debug("dry-run HL7 from %s: %s", sender, message.split("\r", 1)[0])
        return Ack("AA")
