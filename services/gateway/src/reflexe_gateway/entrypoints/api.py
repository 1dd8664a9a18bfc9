"""The gateway's HTTP side: the messages kept as unmatched (or whose cancellation could not be
undone), for the sender itself and the platform's administrators."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Request

from reflexe_common.auth import Principal, Role, require
from reflexe_common.limits import MAX_PAGE_SIZE, Page, pagination

router = APIRouter(prefix="/v1")


@router.get("/messages", summary="Recorded messages needing a person: no open referral, or not undoable")
async def kept_messages(request: Request, status: Literal["UNMATCHED", "NOT_UNDONE"] = "UNMATCHED",
                        page: Page = Depends(pagination(MAX_PAGE_SIZE)),
                        principal: Principal = Depends(require(Role.HOSPITAL, Role.HAD))) -> dict[str, Any]:
    # A hospital or an HAD sees its own messages only; an admin sees all.
    senders = None if principal.role == Role.ADMIN else [principal.finess or ""]
    rows = await request.app.state.pool.fetch(
        "SELECT id, sender_finess, control_id, trigger, effect, pseudonym, event_at, received_at, referral_id, detail "
        "FROM messages WHERE status = $1 AND ($2::text[] IS NULL OR sender_finess = ANY($2)) "
        "ORDER BY received_at, id LIMIT $3 OFFSET $4", status, senders, page.fetch_limit, page.offset)
    shown, next_offset = page.of(rows)
    return {"status": status, "next_offset": next_offset, "messages": [
        {"id": r["id"], "sender_finess": r["sender_finess"], "control_id": r["control_id"], "trigger": r["trigger"],
         "effect": r["effect"], "pseudonym": r["pseudonym"], "event_at": r["event_at"].isoformat(),
         "received_at": r["received_at"].isoformat(),
         "referral_id": str(r["referral_id"]) if r["referral_id"] else None, "detail": r["detail"]}
        for r in shown]}
