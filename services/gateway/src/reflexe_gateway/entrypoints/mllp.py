"""MLLP over TCP (asyncio): frames are 0x0B <message> 0x1C 0x0D; each gets its ACK, in order, on
the same connection. Bytes outside a frame are skipped; a frame too long is answered AR and
skipped to its end marker; nothing a sender writes closes the connection but the sender itself."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from reflexe_gateway.domain.ack import build_ack
from reflexe_gateway.domain.hl7 import APPLICATION_ERROR

log = logging.getLogger(__name__)
START, END = b"\x0b", b"\x1c\x0d"
READ_CHUNK = 65536
IDLE_TIMEOUT_SECONDS = 600

Receive = Callable[[bytes, str], Awaitable[bytes]]


def frame(payload: bytes) -> bytes:
    return START + payload + END


class Deframer:
    """Splits a byte stream into MLLP payloads; `oversized` counts frames dropped for their size."""

    def __init__(self, max_bytes: int) -> None:
        self._buffer = bytearray()
        self._max = max_bytes
        self._in_frame = False
        self._skipping = False  # inside a frame already refused for its size

    def feed(self, data: bytes) -> list[bytes | None]:
        """Payloads completed by `data`; None stands for a frame refused for its size."""
        out: list[bytes | None] = []
        self._buffer += data
        while True:
            if not self._in_frame:
                start = self._buffer.find(START)
                if start < 0:
                    self._buffer.clear()  # noise between frames
                    return out
                del self._buffer[:start + 1]
                self._in_frame, self._skipping = True, False
            end = self._buffer.find(END)
            if end < 0:
                if len(self._buffer) > self._max:
                    if not self._skipping:
                        out.append(None)
                        self._skipping = True
                    # Keep the last byte: it may be the 0x1C of a split end marker.
                    del self._buffer[:-1]
                return out
            payload = bytes(self._buffer[:end])
            del self._buffer[:end + 2]
            self._in_frame = False
            if self._skipping or len(payload) > self._max:
                if not self._skipping:
                    out.append(None)
                continue
            out.append(payload)


async def serve_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, receive: Receive,
                           max_bytes: int, now) -> None:
    peer = (writer.get_extra_info("peername") or ("", 0))[0]
    deframer = Deframer(max_bytes)
    try:
        while True:
            data = await asyncio.wait_for(reader.read(READ_CHUNK), IDLE_TIMEOUT_SECONDS)
            if not data:
                return
            for payload in deframer.feed(data):
                if payload is None:
                    ack = build_ack(None, "AR", "oversized", now(),
                                    (APPLICATION_ERROR, "MSH^1", f"message above {max_bytes} bytes")).encode()
                else:
                    ack = await receive(payload, peer)
                writer.write(frame(ack))
            await writer.drain()
    except (asyncio.TimeoutError, ConnectionError, asyncio.IncompleteReadError):
        return
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except (ConnectionError, OSError):
            pass


async def start_mllp(host: str, port: int, receive: Receive, max_bytes: int, now) -> asyncio.Server:
    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await serve_connection(reader, writer, receive, max_bytes, now)
        except Exception:  # one connection's bug must not reach the server
            log.exception("MLLP connection failed")

    return await asyncio.start_server(on_connection, host, port, limit=READ_CHUNK)
