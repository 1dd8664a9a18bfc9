"""HTTP endpoints of the notify service: recipients manage their webhook subscriptions and read
their delivery log. Every endpoint is authenticated; a caller acts on its own recipient only."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

import asyncpg
from fastapi import APIRouter, Depends, Request, Response

from reflexe_common.auth import Principal, Role, require
from reflexe_common.errors import ApiError
from reflexe_common.limits import MAX_PAGE_SIZE, Page, pagination
from reflexe_common.webhook_secrets import generate_secret
from reflexe_notify.adapters import store
from reflexe_notify.adapters.secret_box import SecretBox
from reflexe_notify.adapters.webhook_http import TargetRefused, TargetUnresolved, WebhookGuard
from reflexe_notify.domain.recipients import Recipient
from reflexe_notify.entrypoints.schemas import RotateIn, SubscriptionIn, delivery_view, parse_id, subscription_view

router = APIRouter(prefix="/v1", tags=["webhooks"])
RECIPIENTS = (Role.HAD, Role.DESK, Role.HOSPITAL)  # the ARS reads dashboards, it is not notified


class DeliveryStatus(StrEnum):
    PENDING = "PENDING"
    DELIVERED = "DELIVERED"
    FAILED = "FAILED"


def _pool(request: Request) -> asyncpg.Pool:
    return request.app.state.pool


def own_recipient(principal: Principal) -> Recipient | None:
    """The recipient a caller speaks for; None for an admin, who speaks for anyone."""
    try:
        if principal.role == Role.HAD:
            return Recipient.had(principal.finess or "")
        if principal.role == Role.HOSPITAL:
            return Recipient.hospital(principal.finess or "")
        if principal.role == Role.DESK:
            return Recipient.desk(principal.department or "")
    except ValueError as exc:
        raise ApiError(403, "OUT_OF_SCOPE", f"the token's scope is not a recipient: {exc}") from exc
    return None


def _check_owner(principal: Principal, recipient: str) -> None:
    own = own_recipient(principal)
    if own is not None and str(own) != recipient:
        raise ApiError(403, "OUT_OF_SCOPE", f"{principal.actor} may not act for {recipient}")


async def _own_subscription(request: Request, subscription_id: str, principal: Principal) -> asyncpg.Record:
    row = await store.get_subscription(_pool(request), parse_id(subscription_id))
    own = own_recipient(principal)
    # Another recipient's subscription gets the answer of one that does not exist (docs/security.md).
    if row is None or (own is not None and str(own) != row["recipient"]):
        raise ApiError(404, "UNKNOWN_SUBSCRIPTION", f"no subscription {subscription_id}")
    return row


@router.post("/subscriptions", status_code=201, summary="Subscribe a URL to webhooks, or an e-mail address")
async def subscribe(body: SubscriptionIn, request: Request,
                    principal: Principal = Depends(require(*RECIPIENTS))) -> dict[str, Any]:
    own = own_recipient(principal)
    recipient = body.recipient or (str(own) if own else None)
    if recipient is None:
        raise ApiError(422, "RECIPIENT_REQUIRED", "an admin must name the recipient",
                       [{"field": "body.recipient", "message": "required for an admin"}])
    _check_owner(principal, recipient)
    if body.channel == "webhook":
        await _check_webhook_url(request.app.state.webhook_guard, body.target)
    secret = None if body.channel == "email" else body.secret or generate_secret()
    try:
        row = await store.create_subscription(
            _pool(request), recipient, body.target, [str(t) for t in body.event_types],
            _box(request).seal(secret) if secret else None, principal.actor, body.channel,
            limit=request.app.state.settings.max_subscriptions_per_recipient)
    except store.SubscriptionLimitReached as exc:
        raise ApiError(409, "SUBSCRIPTION_LIMIT_REACHED", str(exc)) from None
    return subscription_view(row, new_secret=secret)


async def _check_webhook_url(guard: WebhookGuard, url: str) -> None:
    """422 on body.url when webhooks may not go there (checked again before every delivery)."""
    try:
        await guard.check(url)
    except TargetRefused as exc:
        raise ApiError(422, "WEBHOOK_URL_REFUSED", f"webhooks cannot be sent to this URL: {exc}",
                       [{"field": "body.url", "message": str(exc)}]) from None
    except TargetUnresolved as exc:
        raise ApiError(422, "WEBHOOK_HOST_UNRESOLVED", f"webhooks cannot be sent to this URL: {exc}",
                       [{"field": "body.url", "message": str(exc)}]) from None


def _box(request: Request) -> SecretBox:
    return request.app.state.secret_box


@router.get("/subscriptions", summary="The caller's subscriptions, oldest first, one page (secrets are never listed)")
async def subscriptions(request: Request, page: Page = Depends(pagination(MAX_PAGE_SIZE)),
                        principal: Principal = Depends(require(*RECIPIENTS))) -> list[dict[str, Any]]:
    own = own_recipient(principal)
    rows = await store.list_subscriptions(_pool(request), str(own) if own else None, page.limit, page.offset)
    return [subscription_view(r) for r in rows]


@router.post("/subscriptions/{subscription_id}/rotate", summary="Add a new secret; the old one stays valid")
async def rotate(subscription_id: str, request: Request, body: RotateIn | None = None,
                 principal: Principal = Depends(require(*RECIPIENTS))) -> dict[str, Any]:
    row = await _own_subscription(request, subscription_id, principal)
    secret = (body.secret if body else None) or generate_secret()
    updated = await store.add_secret(_pool(request), row["id"], _box(request).seal(secret))
    if updated is None:
        raise ApiError(409, "ROTATION_IN_PROGRESS", "complete the current rotation first")
    return subscription_view(updated, new_secret=secret)


@router.post("/subscriptions/{subscription_id}/rotate/complete", summary="Drop the old secret")
async def complete_rotation(subscription_id: str, request: Request,
                            principal: Principal = Depends(require(*RECIPIENTS))) -> dict[str, Any]:
    row = await _own_subscription(request, subscription_id, principal)
    updated = await store.drop_old_secret(_pool(request), row["id"])
    if updated is None:
        raise ApiError(409, "NO_ROTATION", "no rotation is under way")
    return subscription_view(updated)


@router.delete("/subscriptions/{subscription_id}", status_code=204, summary="Unsubscribe; pending deliveries are dropped")
async def unsubscribe(subscription_id: str, request: Request,
                      principal: Principal = Depends(require(*RECIPIENTS))) -> Response:
    row = await _own_subscription(request, subscription_id, principal)
    await store.delete_subscription(_pool(request), row["id"])
    return Response(status_code=204)


@router.get("/deliveries", summary="The delivery log: the caller's webhooks (a desk: its department's)")
async def deliveries(request: Request, status: DeliveryStatus | None = None, page: Page = Depends(pagination(100)),
                     principal: Principal = Depends(require(*RECIPIENTS))) -> list[dict[str, Any]]:
    recipient, department = _log_scope(principal)
    rows = await store.list_deliveries(_pool(request), recipient=recipient, department=department,
                                       status=status.value if status else None, limit=page.limit, offset=page.offset)
    return [delivery_view(r) for r in rows]


def _log_scope(principal: Principal) -> tuple[str | None, str | None]:
    """(recipient, department) filters of the log a caller may read."""
    if principal.role == Role.DESK:
        return None, principal.department
    own = own_recipient(principal)
    return (str(own) if own else None), None


@router.post("/deliveries/{webhook_id}/retry", summary="Send a FAILED delivery again (same webhook-id and body)")
async def retry(webhook_id: str, request: Request,
                principal: Principal = Depends(require(*RECIPIENTS))) -> dict[str, str]:
    row = await store.get_delivery(_pool(request), webhook_id)
    recipient, department = _log_scope(principal)
    # Outside the caller's log: the answer of a delivery that does not exist (docs/security.md).
    if row is None or (recipient and row["recipient"] != recipient) or (department and row["department"] != department):
        raise ApiError(404, "UNKNOWN_DELIVERY", f"no delivery {webhook_id}")
    if not await store.requeue(_pool(request), webhook_id, request.app.state.settings.max_attempts):
        raise ApiError(409, "NOT_RETRYABLE", "only a FAILED delivery of an active subscription can be retried")
    return {"webhook_id": webhook_id, "status": "PENDING"}
