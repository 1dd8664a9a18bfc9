"""The pages call the referral and capacity services as the person logged in (their own access
token): those services keep deciding what a desk or an HAD may see and do, and the browser talks
to one origin only (no CORS)."""

from __future__ import annotations

from typing import Any

import httpx
from fastapi import Request


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def read_json(request: Request, url: str, token: str) -> tuple[int, Any]:
    """GET another service: (status, body); status 0 when it does not answer."""
    try:
        response = await request.app.state.http.get(url, headers=_bearer(token))
    except httpx.HTTPError:
        return 0, None
    try:
        return response.status_code, response.json()
    except ValueError:
        return response.status_code, None


async def read_object(request: Request, url: str, token: str) -> dict[str, Any] | None:
    """A JSON object read from another service, or None when it is not there (or the service is down)."""
    status, body = await read_json(request, url, token)
    return body if status == 200 and isinstance(body, dict) else None


async def forward(request: Request, url: str, token: str, body: dict[str, Any] | None, done: str,
                  unreachable: str) -> tuple[int, str]:
    """POST a person's action to another service: (status, what to tell them in French)."""
    try:
        answer = await request.app.state.http.post(url, json=body, headers=_bearer(token))
    except httpx.HTTPError:
        return 502, unreachable
    return answer.status_code, done if answer.is_success else problem_fr(answer)


def problem_fr(answer: httpx.Response) -> str:
    """Another service's refusal, told in French with its code (what the person can act upon)."""
    try:
        problem = answer.json()
    except ValueError:
        return f"Action refusée (HTTP {answer.status_code})."
    detail = problem.get("detail") or problem.get("title") or ""
    code = problem.get("code") or ""
    fields = "; ".join(f"{e.get('field')} : {e.get('message')}" for e in problem.get("errors") or [] if isinstance(e, dict))
    return f"Action refusée ({answer.status_code}{' ' + code if code else ''}) : {detail}" + (f" ({fields})" if fields else "")
