"""Test helpers for the desks' side of notify: a server-sent-events reader and a local SMTP
server (aiosmtpd) that records every message it accepts."""

from __future__ import annotations

import asyncio
import email
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from typing import Any

import httpx
from aiosmtpd.controller import Controller

from tests.support.services import free_port


@dataclass(frozen=True)
class SseEvent:
    id: str | None
    event: str
    data: str

    @property
    def json(self) -> dict[str, Any]:
        return json.loads(self.data)


async def sse_events(response: httpx.Response) -> AsyncIterator[SseEvent]:
    """The events of a text/event-stream response, as an EventSource parses them (comments skipped)."""
    event_id: str | None = None
    kind, data = "message", []
    async for line in response.aiter_lines():
        if line == "":
            if data:
                yield SseEvent(event_id, kind, "\n".join(data))
            kind, data = "message", []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            data.append(value)
        elif name == "event":
            kind = value
        elif name == "id":
            event_id = value


class SseCollector:
    """Reads a stream in the background into `events`; `stop()` drops the connection."""

    def __init__(self, client: httpx.AsyncClient, url: str, headers: dict[str, str]) -> None:
        self.events: list[SseEvent] = []
        self.status: int | None = None
        self.opened = asyncio.Event()
        self._task = asyncio.create_task(self._read(client, url, headers))

    async def _read(self, client: httpx.AsyncClient, url: str, headers: dict[str, str]) -> None:
        async with client.stream("GET", url, headers={**headers, "Accept": "text/event-stream"},
                                 timeout=httpx.Timeout(10, read=None)) as response:
            self.status = response.status_code
            self.opened.set()
            if response.status_code != 200:
                await response.aread()
                return
            async for event in sse_events(response):
                self.events.append(event)

    async def stop(self) -> None:
        self._task.cancel()
        try:
            await self._task
        except (asyncio.CancelledError, httpx.HTTPError):
            pass

    @property
    def last_id(self) -> str | None:
        return self.events[-1].id if self.events else None


@dataclass
class SmtpSink:
    """An SMTP server on 127.0.0.1 (aiosmtpd in its own thread). `answer(message_id, nth)` may
    return an SMTP reply to refuse the nth attempt of a message (e.g. '451 4.3.0 try later')."""

    answer: Callable[[str, int], str | None] = lambda _id, _nth: None
    messages: list[EmailMessage] = field(default_factory=list)
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)
    attempts: dict[str, int] = field(default_factory=dict)
    port: int = 0
    _controller: Controller | None = None

    async def handle_DATA(self, server, session, envelope) -> str:  # aiosmtpd handler hook
        message = email.message_from_bytes(envelope.original_content or envelope.content, policy=policy.default)
        message_id = str(message.get("Message-ID", ""))
        self.attempts[message_id] = self.attempts.get(message_id, 0) + 1
        refusal = self.answer(message_id, self.attempts[message_id])
        if refusal:
            return refusal
        self.messages.append(message)
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        return "250 2.0.0 OK"

    def start(self) -> "SmtpSink":
        self.port = free_port()
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller:
            self._controller.stop()
