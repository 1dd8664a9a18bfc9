"""The simulator's MLLP sender against the gateway's own listener and ACK builder (its framing,
on a real socket), with a receiving side scripted per message: each message waits for its ACK,
AE and a lost connection are sent again with the same MSH-10, AR is not, and failures count."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from reflexe_gateway.domain.ack import build_ack
from reflexe_gateway.domain.hl7 import APPLICATION_ERROR, NOT_AUTHORIZED, read_header
from reflexe_gateway.entrypoints.mllp import start_mllp
from reflexe_simulator.actors import Counters
from reflexe_simulator.adt import Movement, MllpSender, build_message
from reflexe_simulator.traffic import PatientRecord

RECORD = PatientRecord("MARTIN", "Jeanne", "244033417200512", datetime(1944, 3, 12).date(), "IPP00000001")


def _message(control_id: str) -> str:
    return build_message(Movement("A03", "349100016", RECORD, datetime(2026, 11, 26, 9, tzinfo=UTC), "E", "SAU", "NDA1",
                                  control_id=control_id))


class ScriptedGateway:
    """Answers by MSH-10: AR for "REFUSED", AE once then AA for "RETRY", closes the connection
    without answering the first time it sees "DROP", AA otherwise."""

    def __init__(self) -> None:
        self.received: list[str] = []
        self._dropped = False

    async def receive(self, payload: bytes, peer: str) -> bytes:
        header = read_header(payload.decode("latin-1"))
        self.received.append(header.control_id)
        now = datetime.now(UTC)
        if header.control_id == "REFUSED":
            return build_ack(header, "AR", "a1", now, (NOT_AUTHORIZED, "MSH^1^4", "not allowed")).encode()
        if header.control_id == "RETRY" and self.received.count("RETRY") == 1:
            return build_ack(header, "AE", "a2", now, (APPLICATION_ERROR, "MSH^1^10", "not recorded, send again")).encode()
        if header.control_id == "DROP" and not self._dropped:
            self._dropped = True
            raise ConnectionResetError("the gateway went away")
        return build_ack(header, "AA", "a3", now).encode()


async def test_each_message_waits_for_its_ack_and_only_aa_counts_as_sent():
    gateway = ScriptedGateway()
    server = await start_mllp("127.0.0.1", 0, gateway.receive, 1 << 20, lambda: datetime.now(UTC))
    port = server.sockets[0].getsockname()[1]
    counters = Counters()
    sender = MllpSender("127.0.0.1", port, counters, attempts=3, backoff=0)
    try:
        assert (await sender.send("349100016", _message("FIRST"))).accepted
        assert (await sender.send("349100016", _message("SECOND"))).accepted
        refused = await sender.send("349100016", _message("REFUSED"))
        assert refused.code == "AR" and "MSH^1^4" in refused.error
        assert (await sender.send("349100016", _message("RETRY"))).accepted
        assert (await sender.send("349100016", _message("DROP"))).accepted
        # Several senders at once: each on its connection, every message answered.
        acks = await asyncio.gather(*(sender.send(f"34910001{i}", _message(f"P{i}")) for i in range(5)))
        assert all(a.accepted for a in acks)
    finally:
        await sender.aclose()
        server.close()
        await server.wait_closed()
    assert gateway.received[:4] == ["FIRST", "SECOND", "REFUSED", "RETRY"]
    assert gateway.received.count("REFUSED") == 1, "an AR is not sent again"
    assert gateway.received.count("RETRY") == 2 and gateway.received.count("DROP") == 2, "sent again, same MSH-10"
    assert counters["hl7_sent"] == 10 and counters["hl7_not_accepted"] == 1


async def test_an_unreachable_gateway_is_counted_not_raised():
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    counters = Counters()
    sender = MllpSender("127.0.0.1", port, counters, attempts=2, backoff=0)
    ack = await sender.send("349100016", _message("NOBODY"))
    await sender.aclose()
    assert not ack.accepted and ack.code == "" and "ConnectionRefused" in ack.error
    assert counters["hl7_not_accepted"] == 1
