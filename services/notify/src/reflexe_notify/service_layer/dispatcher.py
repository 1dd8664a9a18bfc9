"""The dispatcher: sends due deliveries, signed, and records each attempt's outcome.

Webhooks go only to public addresses (or those the deployment allows): the URL is checked again
before every attempt and the connection goes to the address checked (adapters/webhook_http.py).
An attempt refused by that check is not sent; the delivery fails at once (the desk is told), as
a retry would only be refused again. The log keeps the status and a short reason, never what a
receiver answered.

At least once: a delivery is claimed (committed) before it is sent, and its outcome recorded
after. A crash in between leaves it claimed until the claim lapses, then it is sent again with
the same webhook-id and body, which the receiver deduplicates. DELIVERED rows are never
claimed, so nothing acknowledged is sent twice. Several processes share the work safely
(FOR UPDATE SKIP LOCKED).

Latency comes from waits, so nothing here waits on a timer while work is pending: a committed
delivery wakes the dispatcher (LISTEN/NOTIFY), attempts run concurrently (a bounded number, over
kept-alive connections), and their outcomes are written by one recorder that takes every outcome
pending and records them in one transaction. The claims and the recording each keep a connection
of their own, so the hot path spends no round trip on acquiring and resetting pool connections.
The table is looked at without a notification only when a retry falls due, and every
NOTIFY_IDLE_POLL_SECONDS as a fallback (another process's retries, a claim that lapsed).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from datetime import UTC, datetime

import aiosmtplib
import asyncpg
import httpx

from reflexe_notify.adapters import store
from reflexe_notify.adapters.mailer import Mailer
from reflexe_notify.adapters.secret_box import SecretBox, SecretUnreadable
from reflexe_notify.adapters.store import Attempted, Claimed
from reflexe_notify.adapters.webhook_http import (
    TargetRefused, TargetUnresolved, WebhookGuard, describe_failure, post, webhook_client,
)
from reflexe_notify.domain.email import compose, page_url
from reflexe_notify.domain.retry import Outcome, RetryPolicy
from reflexe_notify.domain.signing import signed_headers
from reflexe_notify.metrics import DELIVERY_ATTEMPTS, DELIVERY_SECONDS, PENDING
from reflexe_notify.service_layer.notifications import tell_desk_of_failure
from reflexe_notify.settings import NotifySettings

log = logging.getLogger(__name__)
USER_AGENT = "Reflexe-Webhooks/1.0"


class Dispatcher:
    def __init__(self, pool: asyncpg.Pool, settings: NotifySettings, schema: str, guard: WebhookGuard,
                 box: SecretBox) -> None:
        self._pool = pool
        self._guard = guard
        self._box = box
        self._database_url = settings.database_url
        self._schema = schema
        self._policy = RetryPolicy(settings.max_attempts, settings.backoff_base_seconds, settings.backoff_max_seconds)
        self._timeout = settings.timeout_seconds
        self._concurrency = settings.concurrency
        self._idle_poll = settings.idle_poll_seconds
        self._mailer = Mailer(settings)
        self._public_url = settings.public_url
        self._wake = asyncio.Event()
        self._in_flight: set[asyncio.Task[None]] = set()
        self._saturated = False  # waiting for a free slot: an attempt ending wakes the loop
        self._next_due = 0.0  # monotonic time the earliest known retry falls due (0: ask the table)
        self._unrecorded: list[tuple[Attempted, asyncio.Future[None]]] = []
        self._outcome_ready = asyncio.Event()
        self._recorder: asyncio.Task[None] | None = None

    async def run(self) -> None:
        """Dispatch until cancelled; survives database outages."""
        while True:
            try:
                await self._serve()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("dispatcher failed; restarting")
                await asyncio.sleep(1.0)

    async def _connect(self) -> asyncpg.Connection:
        return await asyncpg.connect(self._database_url, server_settings={"search_path": self._schema})

    async def _serve(self) -> None:
        claiming = await self._connect()  # listens, and claims
        recording: asyncpg.Connection | None = None
        limits = httpx.Limits(max_connections=self._concurrency, max_keepalive_connections=self._concurrency)
        try:
            recording = await self._connect()
            await claiming.add_listener(store.CHANNEL, lambda *_: self._wake.set())
            self._next_due = 0.0
            self._recorder = asyncio.create_task(self._record_pending(recording), name="notify-recorder")
            async with webhook_client(limits, self._timeout, {"user-agent": USER_AGENT}) as client:
                dispatching = asyncio.create_task(self._dispatch(client, claiming), name="notify-claims")
                try:
                    # Either failing (a lost connection) restarts both.
                    await asyncio.wait({dispatching, self._recorder}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    dispatching.cancel()
                    await asyncio.gather(dispatching, return_exceptions=True)
                    await self._finish_in_flight()  # the recorder still records what they end with
                    if not dispatching.cancelled() and dispatching.exception() is not None:
                        raise dispatching.exception()
                    if self._recorder.done() and not self._recorder.cancelled() and self._recorder.exception():
                        raise self._recorder.exception()
        finally:
            if self._recorder is not None:
                self._recorder.cancel()
                await asyncio.gather(self._recorder, return_exceptions=True)
                self._recorder = None
            self._fail_unrecorded(RuntimeError("the dispatcher stopped before recording the attempt"))
            # Closing politely could hang on a broken link; nothing is left in either to finish.
            claiming.terminate()
            if recording is not None:
                recording.terminate()

    async def _dispatch(self, client: httpx.AsyncClient, conn: asyncpg.Connection) -> None:
        last_gauge = 0.0
        while True:
            self._wake.clear()
            free = self._concurrency - len(self._in_flight)
            # The claim lasts twice the attempt's timeout: long enough never to lapse mid-attempt.
            claimed = await store.claim_due(conn, free, 2 * self._timeout) if free else []
            for delivery in claimed:
                task = asyncio.create_task(self._attempt(client, delivery), name=f"webhook-{delivery.webhook_id}")
                self._in_flight.add(task)
                task.add_done_callback(self._attempt_done)
            if time.monotonic() - last_gauge > 1.0:
                PENDING.set(await store.pending_count(conn))
                last_gauge = time.monotonic()
            if claimed and len(claimed) == free:
                continue  # more may be due: go on as soon as a slot frees (or at once if one has)
            await self._sleep(conn, has_free_slot=free > 0)

    async def _sleep(self, conn: asyncpg.Connection, has_free_slot: bool) -> None:
        """Until a new delivery is committed, a slot frees while all are taken, or the next retry
        falls due (known from this process's own retries, or asked of the table after a timer)."""
        timeout = self._idle_poll
        if has_free_slot:
            if self._next_due <= time.monotonic():  # the known one has passed: which is next?
                due_in = await store.seconds_to_next_due(conn)
                self._next_due = time.monotonic() + max(due_in, 0.005) if due_in is not None else math.inf
            timeout = min(timeout, max(self._next_due - time.monotonic(), 0.005))
        self._saturated = len(self._in_flight) >= self._concurrency
        if not self._saturated and not has_free_slot:
            return  # a slot freed while claiming
        try:
            await asyncio.wait_for(self._wake.wait(), timeout)
        except TimeoutError:
            pass
        finally:
            self._saturated = False

    def _attempt_done(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        if self._saturated:
            self._wake.set()
        if not task.cancelled() and task.exception() is not None:
            log.error("recording a webhook attempt failed; the claim will lapse and it will be retried",
                      exc_info=task.exception())

    async def _finish_in_flight(self) -> None:
        """On shutdown, let attempts under way end (they are bounded by the timeout)."""
        if self._in_flight:
            _, unfinished = await asyncio.wait(set(self._in_flight), timeout=self._timeout + 1)
            for task in unfinished:
                task.cancel()

    async def _attempt(self, client: httpx.AsyncClient, d: Claimed) -> None:
        if d.channel == "email":
            await self._attempt_email(d)
            return
        body = d.body.encode()
        started_at = datetime.now(UTC)
        started = time.perf_counter()
        http_status: int | None = None
        error: str | None = None
        refused = False
        try:
            async with asyncio.timeout(self._timeout):  # total: resolution, connection, answer
                target = await self._guard.check(d.url)
                headers = signed_headers([self._box.open(s) for s in d.secrets], d.webhook_id, int(time.time()), body)
                http_status = await post(client, target, body, headers)
            if not 200 <= http_status < 300:
                error = f"HTTP {http_status}"
        except TargetRefused as exc:
            refused, error = True, f"refused: {exc}"
        except (TargetUnresolved, SecretUnreadable) as exc:
            error = str(exc)
        except TimeoutError:
            error = f"no answer within {self._timeout:g} s"
        except httpx.HTTPError as exc:
            error = describe_failure(exc)
        duration = time.perf_counter() - started
        outcome = Outcome.FAILED if refused else self._policy.outcome(http_status, d.attempts, d.attempt_limit)
        DELIVERY_SECONDS.observe(duration)
        DELIVERY_ATTEMPTS.labels(str(outcome)).inc()
        await self._record(d, outcome, started_at, duration, http_status, error)

    async def _attempt_email(self, d: Claimed) -> None:
        """The same attempt over SMTP: any refusal or failure is retried like a webhook's, and the
        attempt is logged with no HTTP status and the SMTP answer as its error."""
        started_at = datetime.now(UTC)
        started = time.perf_counter()
        error: str | None = None
        try:
            department = d.department
            link = page_url(self._public_url, d.recipient, department)
            message = compose(d.body, d.webhook_id, self._mailer.sender, d.url.removeprefix("mailto:"), link,
                              for_had=d.recipient.startswith("had:"))
            async with asyncio.timeout(self._timeout):
                await self._mailer.send(message)
        except TimeoutError:
            error = f"no answer within {self._timeout:g} s"
        except (aiosmtplib.SMTPException, OSError, ValueError) as exc:
            error = f"SMTP {type(exc).__name__}: {exc}"[:500]
        duration = time.perf_counter() - started
        outcome = self._policy.outcome(200 if error is None else None, d.attempts, d.attempt_limit)
        DELIVERY_SECONDS.observe(duration)
        DELIVERY_ATTEMPTS.labels(str(outcome)).inc()
        await self._record(d, outcome, started_at, duration, None, error)

    async def _record(self, d: Claimed, outcome: Outcome, started_at: datetime, duration: float,
                      http_status: int | None, error: str | None) -> None:
        """Hand the outcome to the recorder and hold the slot until it is committed (so that the
        claims in flight stay bounded by the concurrency, whatever the database's pace)."""
        if self._recorder is None or self._recorder.done():
            raise RuntimeError("no recorder running")
        retry_in = self._policy.delay(d.attempts) if outcome is Outcome.RETRY else None
        recorded = asyncio.get_running_loop().create_future()
        self._unrecorded.append((Attempted(d, str(outcome), started_at, duration, http_status, error, retry_in),
                                 recorded))
        self._outcome_ready.set()
        await recorded

    async def _record_pending(self, conn: asyncpg.Connection) -> None:
        """Record every outcome pending in one transaction, again and again; raises (the
        dispatcher restarts with new connections) when the connection is lost."""
        try:
            await self._record_forever(conn)
        finally:
            self._fail_unrecorded(RuntimeError("the recorder stopped before recording the attempt"))

    async def _record_forever(self, conn: asyncpg.Connection) -> None:
        while True:
            await self._outcome_ready.wait()
            self._outcome_ready.clear()
            batch, self._unrecorded = self._unrecorded, []
            if not batch:
                continue
            try:
                async with conn.transaction():
                    await self._record_batch(conn, [attempted for attempted, _ in batch])
            except Exception as exc:
                if conn.is_closed():
                    for _, recorded in batch:
                        _settle(recorded, exc)
                    raise
                # One outcome the database refuses must not lose the others': each alone.
                log.warning("recording a batch of attempts failed; recording them one by one", exc_info=True)
                for attempted, recorded in batch:
                    try:
                        async with conn.transaction():
                            await self._record_batch(conn, [attempted])
                    except Exception as one:
                        _settle(recorded, one)
                        if conn.is_closed():
                            raise
                    else:
                        _settle(recorded)
            else:
                for _, recorded in batch:
                    _settle(recorded)
            retries = [a.retry_in for a, _ in batch if a.retry_in is not None]
            if retries:
                due = time.monotonic() + min(retries)
                if due < self._next_due:
                    self._next_due = due
                    self._wake.set()  # the dispatcher's sleep is now too long

    async def _record_batch(self, conn: asyncpg.Connection, batch: list[Attempted]) -> None:
        await store.record_attempts(conn, batch)
        for attempted in batch:
            d = attempted.delivery
            if attempted.outcome == Outcome.GONE:
                await store.deactivate_subscription(conn, d.subscription_id, "receiver answered 410 Gone")
                await tell_desk_of_failure(conn, d, self._policy.max_attempts)
            elif attempted.outcome == Outcome.FAILED and await store.mark_failed(conn, d, attempted.error or ""):
                log.warning("webhook given up", extra={"webhook_id": d.webhook_id, "attempts": d.attempts,
                                                       "event_type": d.event_type, "error": attempted.error})
                await tell_desk_of_failure(conn, d, self._policy.max_attempts)

    def _fail_unrecorded(self, exc: Exception) -> None:
        batch, self._unrecorded = self._unrecorded, []
        for _, recorded in batch:
            _settle(recorded, exc)


def _settle(recorded: asyncio.Future[None], exc: BaseException | None = None) -> None:
    if recorded.done():
        return
    if exc is None:
        recorded.set_result(None)
    else:
        recorded.set_exception(exc)
