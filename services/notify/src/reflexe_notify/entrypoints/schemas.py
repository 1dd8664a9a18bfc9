"""The notify API's JSON shapes. Secrets are shown once, when created: never listed."""

from __future__ import annotations

import json
import re
import uuid
from datetime import datetime
from typing import Any

import asyncpg
from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, field_validator, model_validator

from reflexe_common.errors import ApiError
from reflexe_common.webhook_secrets import secret_key
from reflexe_notify.domain.recipients import Recipient
from reflexe_notify.domain.routing import EventKind


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_secret(value: str | None) -> str | None:
    if value is not None:
        secret_key(value)  # ValueError → 422 with the reason
    return value


_EMAIL = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$")


class SubscriptionIn(_Strict):
    url: AnyHttpUrl | None = Field(None, description="where webhooks are POSTed: https (plain http only where the "
                                              "deployment allows it, for local development), to a public address; "
                                              "or give `email`")
    email: str | None = Field(None, max_length=254,
                              description="an e-mail address (MSSanté in production) instead of a webhook URL")
    event_types: list[EventKind] = Field(default_factory=list, description="the types wanted; empty for all")
    recipient: str | None = Field(None, description="had:<finess>, desk:<department> or hospital:<finess>; "
                                                    "defaults to the caller's own")
    secret: str | None = Field(None, description="whsec_<base64 of 24 to 64 bytes>; generated when absent")

    @field_validator("recipient")
    @classmethod
    def _recipient(cls, value: str | None) -> str | None:
        return str(Recipient.parse(value)) if value is not None else None

    @field_validator("secret")
    @classmethod
    def _secret(cls, value: str | None) -> str | None:
        return _check_secret(value)

    @field_validator("email")
    @classmethod
    def _email(cls, value: str | None) -> str | None:
        if value is not None and not _EMAIL.match(value):
            raise ValueError("not an e-mail address")
        return value

    @model_validator(mode="after")
    def _one_channel(self) -> "SubscriptionIn":
        if (self.url is None) == (self.email is None):
            raise ValueError("give either url (webhook) or email")
        if self.email is not None and self.secret is not None:
            raise ValueError("an e-mail subscription has no signing secret")
        return self

    @property
    def channel(self) -> str:
        return "email" if self.email else "webhook"

    @property
    def target(self) -> str:
        return f"mailto:{self.email}" if self.email else str(self.url)


class RotateIn(_Strict):
    secret: str | None = Field(None, description="the new secret; generated when absent")

    @field_validator("secret")
    @classmethod
    def _secret(cls, value: str | None) -> str | None:
        return _check_secret(value)


def subscription_view(row: asyncpg.Record, new_secret: str | None = None) -> dict[str, Any]:
    email = row["channel"] == "email"
    view: dict[str, Any] = {
        "id": str(row["id"]), "recipient": row["recipient"], "channel": row["channel"],
        **({"email": row["url"].removeprefix("mailto:")} if email else {"url": row["url"]}),
        "event_types": list(row["event_types"]), "rotating": len(row["secrets"]) == 2,
        "created_by": row["created_by"], "created_at": row["created_at"].isoformat(),
    }
    if new_secret is not None:
        view["secret"] = new_secret  # shown this once; only its holder can verify our signatures
    return view


def delivery_view(row: dict[str, Any]) -> dict[str, Any]:
    def iso(value: datetime | None) -> str | None:
        return value.isoformat() if value else None

    return {
        "webhook_id": row["webhook_id"], "subscription_id": str(row["subscription_id"]), "recipient": row["recipient"],
        "department": row["department"], "event_type": row["event_type"], "status": row["status"],
        "attempts": row["attempts"], "next_attempt_at": iso(row["next_attempt_at"]) if row["status"] == "PENDING" else None,
        "created_at": iso(row["created_at"]), "delivered_at": iso(row["delivered_at"]), "last_error": row["last_error"],
        "attempt_log": json.loads(row["attempt_log"]),
    }


def parse_id(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise ApiError(404, "UNKNOWN_SUBSCRIPTION", f"no subscription {value}") from None
