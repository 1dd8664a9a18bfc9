"""The machine-readable error every endpoint returns (RFC 9457 problem details + a code)."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.errors = errors or []

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"type": f"urn:reflexe:error:{self.code}", "title": self.message, "status": self.status, "code": self.code}
        if self.errors:
            body["errors"] = self.errors
        return body
