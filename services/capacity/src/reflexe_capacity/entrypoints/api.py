"""HTTP endpoints of the capacity service: the HAD registry, capacity declarations, and the
department capacity board the coordination desk watches."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from reflexe_capacity.adapters.store import CapacityStore
from reflexe_capacity.domain.capacity import CapacityDeclaration, HadLedger
from reflexe_capacity.domain.registry import HadEstablishment, authorisation_problems
from reflexe_capacity.service_layer.unit_of_work import PostgresUnitOfWork
from reflexe_capacity.entrypoints.schemas import DeclarationIn, HadIn, board_line, had_view
from reflexe_common.auth import Principal, Role, ensure_department, how_to_connect, require
from reflexe_common.checks import CLOCK_SKEW, in_the_future, is_department, require_department
from reflexe_common.errors import ApiError
from reflexe_common.finess import FINESS_PROBLEM, is_finess
from reflexe_common.limits import MAX_PAGE_SIZE, Page, pagination
from reflexe_common.geography import Geography

router = APIRouter(prefix="/v1")



def _check_had_scope(principal: Principal, finess: str, departments: frozenset[str] | set[str]) -> None:
    """An HAD sees itself; a desk or the ARS an HAD of their area."""
    if principal.role == Role.HAD:
        if principal.finess != finess:
            raise ApiError(403, "OUT_OF_SCOPE", f"{principal.actor} may only act as itself")
        return
    if principal.role == Role.ADMIN:
        return
    for department in departments:
        try:
            ensure_department(principal, department)
            return
        except ApiError:
            continue
    raise ApiError(403, "OUT_OF_SCOPE", f"{principal.actor} may not see HAD {finess}")


async def _visible_had(conn, finess: str, principal: Principal) -> HadEstablishment:
    """The registered HAD, if the caller may see it (404 unknown, 403 out of scope)."""
    had = await CapacityStore(conn).had(finess)
    if had is None:
        raise ApiError(404, "UNKNOWN_HAD", f"no HAD {finess} in the registry")
    _check_had_scope(principal, finess, had.departments)
    return had


@router.put("/hads/{finess}", summary="Register or update an HAD establishment (admin)")
async def put_had(finess: str, body: HadIn, request: Request, principal: Principal = Depends(require(Role.ADMIN))) -> dict[str, Any]:
    if not is_finess(finess):
        raise ApiError(422, "INVALID_FINESS", FINESS_PROBLEM, [{"field": "path.finess", "message": FINESS_PROBLEM}])
    problems = authorisation_problems(body.mentions, body.mpp_supported)
    if problems:
        raise ApiError(422, "INVALID_AUTHORISATION", "MPP codes the HAD cannot support: " + ", ".join(p for p, _ in problems),
                       [{"field": f"body.{path}", "message": message} for path, message in problems])
    geography = Geography.load()
    errors = [{"field": f"body.departments[{i}]", "message": f"unknown department {d!r}"}
              for i, d in enumerate(body.departments) if not is_department(d)]
    errors += [{"field": f"body.zone_communes[{i}]", "message": f"unknown INSEE code {c!r}"}
               for i, c in enumerate(body.zone_communes) if geography.commune(c) is None]
    if errors:
        raise ApiError(422, "UNKNOWN_GEOGRAPHY", "unknown departments or communes", errors[:50])
    had = body.to_domain(finess)
    async with request.app.state.pool.acquire() as conn:
        await CapacityStore(conn).upsert_had(had)
    return {**had_view(had), "connect": how_to_connect(request.app.state.verifier.settings.issuer, Role.HAD, finess)}


@router.get("/hads/{finess}", summary="One HAD establishment of the registry")
async def get_had(finess: str, request: Request,
                  principal: Principal = Depends(require(Role.HAD, Role.DESK, Role.ARS))) -> dict[str, Any]:
    async with request.app.state.pool.acquire() as conn:
        had = await _visible_had(conn, finess, principal)
    return had_view(had)


@dataclass(frozen=True)
class Declared:
    """A declaration's outcome: whether it was recorded (False: the same one again), and the
    HAD's capacity after it."""

    stored: bool
    had: HadEstablishment
    ledger: HadLedger
    at: datetime


async def declare_capacity(finess: str, body: DeclarationIn, request: Request, principal: Principal,
                           channel: str) -> Declared:
    """The one way in for a declaration over HTTP, REST or FHIR (which translates into a DeclarationIn)."""
    _check_had_scope(principal, finess, set())
    now = datetime.now(UTC)
    if body.declared_at is not None and in_the_future(body.declared_at, now):
        # It would never go stale and would hide every later declaration.
        raise ApiError(422, "DECLARED_IN_THE_FUTURE", "declared_at is in the future",
                       [{"field": "body.declared_at", "message": f"more than {CLOCK_SKEW} after the platform's clock"}])
    declaration = CapacityDeclaration(finess, body.places_available, body.admissions_possible_today, body.status,
                                      (body.declared_at or now).astimezone(UTC), body.active_patients)
    matcher = request.app.state.matcher
    async with request.app.state.pool.acquire() as conn, conn.transaction():
        uow = PostgresUnitOfWork(conn)
        try:
            stored = await matcher.declare(uow, declaration, channel)
        except LookupError as exc:
            raise ApiError(404, "UNKNOWN_HAD", f"no HAD {finess} in the registry") from exc
        had, ledger = await uow.had_with_ledger(finess)
    return Declared(stored, had, ledger, now)


@router.post("/hads/{finess}/capacity", status_code=201, summary="The HAD declares its capacity")
async def declare(finess: str, body: DeclarationIn, request: Request,
                  principal: Principal = Depends(require(Role.HAD))) -> JSONResponse:
    declared = await declare_capacity(finess, body, request, principal, "rest")
    return JSONResponse(board_line(declared.had, declared.ledger, declared.at, request.app.state.matcher.policy.stale_after),
                        status_code=201 if declared.stored else 200)


@router.get("/hads/{finess}/capacity/history", summary="The HAD's declarations, newest first")
async def history(finess: str, request: Request, page: Page = Depends(pagination(100)),
                  principal: Principal = Depends(require(Role.HAD, Role.DESK, Role.ARS))) -> dict[str, Any]:
    async with request.app.state.pool.acquire() as conn:
        await _visible_had(conn, finess, principal)
        rows, next_offset = page.of(await conn.fetch(
            "SELECT places_available, admissions_possible_today, active_patients, status, declared_at, received_at, channel "
            "FROM declarations WHERE had_finess = $1 ORDER BY declared_at DESC, received_at DESC LIMIT $2 OFFSET $3",
            finess, page.fetch_limit, page.offset))
    return {"finess": finess, "next_offset": next_offset, "declarations": [
        {**dict(r), "declared_at": r["declared_at"].isoformat(), "received_at": r["received_at"].isoformat()} for r in rows]}


@router.get("/departments/{department}/capacity", summary="The capacity board of a department")
async def board(department: str, request: Request, page: Page = Depends(pagination(MAX_PAGE_SIZE)),
                principal: Principal = Depends(require(Role.DESK, Role.ARS))) -> dict[str, Any]:
    require_department(department)
    ensure_department(principal, department)
    now = datetime.now(UTC)
    async with request.app.state.pool.acquire() as conn:
        # A department has a handful of HADs: the page is cut from the board read in one go.
        lines, next_offset = page.of((await CapacityStore(conn).board(department))[page.offset:page.offset + page.fetch_limit])
    stale_after = request.app.state.matcher.policy.stale_after
    return {"department": department, "as_of": now.isoformat(), "stale_after_seconds": int(stale_after.total_seconds()),
            "next_offset": next_offset, "hads": [board_line(had, ledger, now, stale_after) for had, ledger in lines]}
