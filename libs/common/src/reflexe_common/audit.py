"""The audit trail: who read which referral, who was refused what, who steered which referral.

One append-only table per service schema (`audit_trail`, sql/001_audit_trail_and_retention.sql;
a trigger refuses UPDATE, DELETE and TRUNCATE). Three kinds of entries land there:

- reads of referrals (one entry per request, listing the referral ids returned: a department's
  queue polled by a desk page is one row, not one per referral);
- refusals (401, 403, 409) answered by any endpoint of any service, recorded centrally by the
  error handlers of reflexe_common.http;
- desk and HAD commands, written by the referral service in the transaction of the command
  itself (`insert`), so an accepted command never lacks its entry.

Reads and refusals go through an `AuditWriter`: the request only puts the entry in a bounded
queue (never waits on, nor fails because of, the database); a background task writes batches
with COPY. A full queue (a flood of 401s) drops entries and counts them, as does a batch that
still fails after a few tries; both are logged.

An entry names the caller by the token's `sub` (pseudonymous: the identity provider's id) and
its role:scope, the action by method and route template (never a concrete URL nor a query
string), the resource by department and referral ids. Never a patient's data.

`GET /v1/audit` (every service, its own trail): admins see everything; the ARS sees the entries
about departments of its region. Entries without a department (a 401 without a token, a role
refused on a platform-wide endpoint, a command of an HAD on no known referral) are not about
any region: only admins see them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Depends, Query, Request
from prometheus_client import Counter

from reflexe_common.auth import Principal, Role, ensure_department, require
from reflexe_common.errors import ApiError
from reflexe_common.geography import Geography, is_department_code
from reflexe_common.limits import MAX_PAGE_SIZE

log = logging.getLogger(__name__)

REFUSALS = frozenset({401, 403, 409})
ANONYMOUS = "anonymous"
COLUMNS = ("at", "subject", "actor", "action", "department", "referral_ids", "status", "code", "detail")

AUDIT_WRITTEN = Counter("reflexe_audit_entries_written_total", "Audit entries written to the audit trail.")
AUDIT_DROPPED = Counter("reflexe_audit_entries_dropped_total",
                        "Audit entries lost: queue_full (a flood outran the writer) or write_failed (the database "
                        "refused the batch after every try).", ["reason"])
AUDIT_WRITE_FAILURES = Counter("reflexe_audit_write_failures_total", "Failed attempts to write a batch of audit entries.")
for _reason in ("queue_full", "write_failed"):
    AUDIT_DROPPED.labels(_reason)


@dataclass(frozen=True)
class AuditEntry:
    subject: str
    actor: str | None
    action: str
    status: int
    code: str
    department: str | None = None
    referral_ids: tuple[uuid.UUID, ...] = ()
    detail: dict[str, Any] = field(default_factory=dict)
    at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def record(self) -> tuple[Any, ...]:
        return (self.at, _clean(self.subject) or ANONYMOUS, _clean(self.actor), _clean(self.action) or "unknown",
                self.department, list(self.referral_ids), self.status, _clean(self.code) or "UNKNOWN",
                json.dumps(self.detail))


def _clean(text: str | None, limit: int = 200) -> str | None:
    """Bounded, NUL-free text: one odd value must never make a whole batch fail."""
    return None if text is None else text.replace("\x00", "")[:limit]


async def insert(conn: asyncpg.Connection, entry: AuditEntry) -> None:
    """Write one entry now, in the caller's transaction (commands: the entry commits with them)."""
    await conn.execute(
        "INSERT INTO audit_trail (at, subject, actor, action, department, referral_ids, status, code, detail) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)", *entry.record())


class AuditWriter:
    """A bounded queue of entries and the task that writes them in batches."""

    def __init__(self, pool: asyncpg.Pool, capacity: int = 10_000, batch_size: int = 500,
                 tries: int = 3, retry_seconds: float = 0.5) -> None:
        self._pool = pool
        self._queue: asyncio.Queue[AuditEntry] = asyncio.Queue(maxsize=capacity)
        self._batch_size = batch_size
        self._tries = tries
        self._retry_seconds = retry_seconds
        self._dropped = 0

    def record(self, entry: AuditEntry) -> None:
        """Never blocks, never raises: the response does not depend on the audit."""
        try:
            self._queue.put_nowait(entry)
        except asyncio.QueueFull:
            AUDIT_DROPPED.labels("queue_full").inc()
            self._dropped += 1
            if self._dropped % 1000 == 1:  # a flood must not become a flood of log lines either
                log.warning("audit queue full: entries dropped", extra={"dropped_so_far": self._dropped})

    async def run(self) -> None:
        try:
            while True:
                batch = [await self._queue.get()]
                while len(batch) < self._batch_size and not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                await self._write(batch)
        finally:
            await self._drain()

    async def _drain(self) -> None:
        """On shutdown, one last try at what is still queued."""
        batch = []
        while not self._queue.empty():
            batch.append(self._queue.get_nowait())
        if batch:
            try:
                await asyncio.wait_for(self._write(batch, tries=1), timeout=5)
            except Exception:
                log.exception("audit entries not written at shutdown", extra={"entries": len(batch)})

    async def _write(self, batch: list[AuditEntry], tries: int | None = None) -> None:
        tries = tries or self._tries
        for attempt in range(1, tries + 1):
            try:
                async with self._pool.acquire() as conn:
                    await conn.copy_records_to_table("audit_trail", records=[e.record() for e in batch], columns=COLUMNS)
                AUDIT_WRITTEN.inc(len(batch))
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                AUDIT_WRITE_FAILURES.inc()
                log.exception("audit batch not written", extra={"entries": len(batch), "attempt": attempt})
                if attempt < tries:
                    await asyncio.sleep(self._retry_seconds * attempt)
        AUDIT_DROPPED.labels("write_failed").inc(len(batch))


# --------------------------------------------------------------------------- from a request


def about(request: Request, department: str | None = None, referral_ids: list[str] | None = None) -> None:
    """Name the resource a request is about before checking the caller's scope on it, so that a
    refusal is recorded with it (a 403 on a referral says which department it was)."""
    if department is not None:
        request.state.audit_department = department
    if referral_ids is not None:
        request.state.audit_referral_ids = referral_ids


def record_read(request: Request, principal: Principal, department: str | None, referral_ids: list[str]) -> None:
    """A successful read of referrals (one entry per request)."""
    _record(request, principal, 200, "OK", department, referral_ids)


def record_hidden(request: Request, principal: Principal, department: str | None, referral_ids: list[str]) -> None:
    """A resource that exists but is not the caller's, answered 404 as if it did not exist
    (docs/security.md): the trail keeps the refusal the answer does not tell."""
    _record(request, principal, 404, "OUT_OF_SCOPE", department, referral_ids)


def already_recorded(request: Request) -> None:
    """The refusal was written by the command's own transaction: the central handler skips it."""
    request.state.audit_recorded = True


def record_refusal(request: Request, status: int, code: str) -> None:
    """Called by the error handlers of every service for each problem answered."""
    if status not in REFUSALS or getattr(request.state, "audit_recorded", False):
        return
    try:
        state = request.state
        department = getattr(state, "audit_department", None) or request.path_params.get("department")
        referral_ids = getattr(state, "audit_referral_ids", None)
        if referral_ids is None:
            referral_ids = [request.path_params["referral_id"]] if "referral_id" in request.path_params else []
        _record(request, getattr(state, "principal", None), status, code, department, referral_ids)
    except Exception:
        log.exception("refusal not audited")


def _record(request: Request, principal: Principal | None, status: int, code: str, department: str | None,
            referral_ids: list[str]) -> None:
    writer: AuditWriter | None = getattr(request.app.state, "audit", None)
    if writer is None:  # not started yet, or a service without a trail
        AUDIT_DROPPED.labels("write_failed").inc()
        return
    route = getattr(request.scope.get("route"), "path", None) or "unmatched"
    writer.record(AuditEntry(
        subject=principal.subject if principal else ANONYMOUS,
        actor=principal.actor if principal else None,
        action=f"{request.method} {route}",
        status=status, code=code,
        department=department if department and is_department_code(str(department)) else None,
        referral_ids=tuple(_uuids(referral_ids)),
    ))


def _uuids(values: list[Any]) -> list[uuid.UUID]:
    out = []
    for value in values:
        try:
            out.append(value if isinstance(value, uuid.UUID) else uuid.UUID(str(value)))
        except ValueError:
            continue  # a malformed id in a refused URL is nobody's resource
    return out


# --------------------------------------------------------------------------- the API

router = APIRouter(prefix="/v1", tags=["audit"])
_CURSOR = r"^[0-9]{1,19}$"


@router.get("/audit", summary="The audit trail of this service: reads, refusals and commands, newest first",
            description="Admins see every entry; the ARS the entries about departments of its region (entries "
                        "without a department are platform-wide: admins only). Page with `cursor` = the previous "
                        "page's `next_cursor`. `since` is inclusive, `until` exclusive.")
async def list_audit(
    request: Request,
    principal: Principal = Depends(require(Role.ARS)),
    subject: Annotated[str | None, Query(max_length=200, description="the token's sub")] = None,
    action: Annotated[str | None, Query(max_length=200, description="e.g. 'GET /v1/referrals/{referral_id}'")] = None,
    status: Annotated[int | None, Query(ge=100, le=599, description="the HTTP status answered")] = None,
    department: Annotated[str | None, Query(max_length=3)] = None,
    referral_id: uuid.UUID | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE, description=f"page size, 1 to {MAX_PAGE_SIZE}")] = 50,
    cursor: Annotated[str | None, Query(pattern=_CURSOR, description="next_cursor of the previous page")] = None,
) -> dict[str, Any]:
    if department is not None and not is_department_code(department):
        raise ApiError(422, "INVALID_REQUEST", "invalid request: query.department",
                       [{"field": "query.department", "message": f"not a department code: {department!r}"}])
    if department is not None:
        about(request, department=department)
        ensure_department(principal, department)
    where, args = [], []

    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    if principal.role == Role.ARS:
        region_departments = [d.code for d in Geography.load().departments_of_region(principal.region or "")]
        where.append(f"department = ANY({arg(region_departments)}::text[])")
    for column, value in (("subject", subject), ("action", action), ("status", status), ("department", department)):
        if value is not None:
            where.append(f"{column} = {arg(value)}")
    if referral_id is not None:
        where.append(f"referral_ids @> ARRAY[{arg(referral_id)}::uuid]")
    if since is not None:
        where.append(f"at >= {arg(_aware(since))}")
    if until is not None:
        where.append(f"at < {arg(_aware(until))}")
    if cursor is not None:
        where.append(f"id < {arg(int(cursor))}")
    sql = (f"SELECT id, {', '.join(COLUMNS)} FROM audit_trail"
           f"{' WHERE ' + ' AND '.join(where) if where else ''} ORDER BY id DESC LIMIT {arg(limit + 1)}")
    rows = await request.app.state.pool.fetch(sql, *args)
    page = rows[:limit]
    return {"entries": [_view(r) for r in page],
            "next_cursor": str(page[-1]["id"]) if len(rows) > limit else None}


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _view(row: asyncpg.Record) -> dict[str, Any]:
    return {"id": str(row["id"]), "at": row["at"].isoformat(), "subject": row["subject"], "actor": row["actor"],
            "action": row["action"], "department": row["department"],
            "referral_ids": [str(r) for r in row["referral_ids"]], "status": row["status"], "code": row["code"],
            "detail": json.loads(row["detail"])}


def start_writer(app, pool: asyncpg.Pool) -> AuditWriter:
    """The service's writer; its `run()` goes to the service's background tasks."""
    writer = AuditWriter(pool)
    app.state.audit = writer
    return writer
