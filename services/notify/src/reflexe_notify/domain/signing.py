"""Standard Webhooks signatures (https://www.standardwebhooks.com/), made by the specification's
reference library: `v1,<base64 HMAC-SHA256>` of `{webhook-id}.{webhook-timestamp}.{body}`. During
a secret rotation a webhook carries one signature per secret, space-separated, so a receiver
verifies with whichever secret it holds (receivers verify with the same library)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from standardwebhooks import Webhook

from reflexe_common.webhook_secrets import secret_key


def sign(secrets: Iterable[str], webhook_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header value: one `v1,<b64>` per secret (ValueError on a bad secret)."""
    moment = datetime.fromtimestamp(timestamp, tz=UTC)
    text = body.decode()  # the library signs text; bodies are UTF-8 JSON, so this round-trips exactly
    return " ".join(Webhook(secret_key(s)).sign(webhook_id, moment, text) for s in secrets)


def signed_headers(secrets: Iterable[str], webhook_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secrets, webhook_id, timestamp, body),
        "content-type": "application/json",
    }
