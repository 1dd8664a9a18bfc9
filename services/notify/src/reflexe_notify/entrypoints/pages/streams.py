"""The live streams (server-sent events): a desk's, opened by its page (session cookie) or by a
program (bearer token, GET /v1/desks/{d}/stream, with the desk's alerts beside it), and an HAD's,
opened by its page. Each entry has an id; a reconnecting EventSource resumes after the last one it
saw (Last-Event-ID), a new one after the id its page was rendered at (?after=)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from sse_starlette import EventSourceResponse, ServerSentEvent

from reflexe_common.auth import Principal, Role, require
from reflexe_common.errors import ApiError
from reflexe_notify.adapters import store
from reflexe_notify.entrypoints.pages.session import desk_api_session, desk_scope, had_api_session
from reflexe_notify.service_layer import had_stream

router = APIRouter(tags=["desk"])
# One event of the stream as OpenAPI 3.1 describes a text/event-stream entry (before 3.2's
# itemSchema, `schema` is each event's): its type, its id to resume from, its JSON payload.
DESK_EVENT = {
    "type": "object",
    "required": ["event", "id", "data"],
    "properties": {
        "event": {"const": "desk"},
        "id": {"type": "string", "pattern": "^[0-9]+$"},
        "data": {"type": "string", "contentMediaType": "application/json"},
        "retry": {"type": "integer"},
    },
}


def _start(request: Request, after: int | None, head: int) -> int:
    """Where a stream starts: Last-Event-ID (a reconnecting EventSource) over ?after= over now."""
    header = request.headers.get("last-event-id")
    if header:
        try:
            after = int(header)
        except ValueError:
            raise ApiError(422, "INVALID_LAST_EVENT_ID", "Last-Event-ID is a number from this stream") from None
    if after is None:
        return head
    return max(0, min(after, head))  # a number from the future (a reset database) would wait for ever


async def _stream(request: Request, key: str, after: int | None, event: str, greeting: str) -> EventSourceResponse:
    start = _start(request, after, await store.desk_head(request.app.state.pool, key))

    async def events():
        yield ServerSentEvent(comment=greeting, retry=1000)
        async for seq, payload in request.app.state.desk_hub.follow(key, start):
            yield ServerSentEvent(payload, event=event, id=str(seq))

    return EventSourceResponse(events(), ping=15, headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


async def _desk_stream(request: Request, department: str, after: int | None) -> EventSourceResponse:
    return await _stream(request, department, after, "desk", f"flux du bureau {department}")


@router.get("/desk/{department}/stream", include_in_schema=False)
async def desk_stream_cookie(department: str, request: Request,
                             after: int | None = Query(None, ge=0)) -> EventSourceResponse:
    await desk_api_session(request, department)
    return await _desk_stream(request, department, after)


@router.get("/v1/desks/{department}/stream", summary="The desk's live stream (server-sent events)",
            response_class=EventSourceResponse,
            responses={200: {"description": "Server-sent events, one `desk` event per change",
                             "content": {"text/event-stream": {"schema": DESK_EVENT}}}},
            description="Events `desk`, each with an `id`; reconnect with `Last-Event-ID` to resume without a gap. "
                        "`after` starts after a given id (0: from the oldest kept); default: from now.")
async def desk_stream_bearer(department: str, request: Request, after: int | None = Query(None, ge=0),
                             principal: Principal = Depends(require(Role.DESK, Role.ARS))) -> EventSourceResponse:
    desk_scope(principal, department)
    return await _desk_stream(request, department, after)


@router.get("/v1/desks/{department}/alerts", summary="The desk's alerts, newest first")
async def desk_alerts(department: str, request: Request, limit: int = Query(50, ge=1, le=500),
                      principal: Principal = Depends(require(Role.DESK, Role.ARS))) -> dict[str, Any]:
    desk_scope(principal, department)
    return {"department": department, "alerts": await store.desk_alerts(request.app.state.pool, department, limit)}


@router.get("/had/{finess}/stream", include_in_schema=False, tags=["had"])
async def had_stream_cookie(finess: str, request: Request, after: int | None = Query(None, ge=0)) -> EventSourceResponse:
    await had_api_session(request, finess)
    return await _stream(request, had_stream.stream_key(finess), after, "had", f"flux de l'HAD {finess}")
