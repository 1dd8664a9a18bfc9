"""Standard Webhooks signatures (https://www.standardwebhooks.com/).

The signed content is `{webhook-id}.{webhook-timestamp}.{body}`; the signature is
`v1,<base64 HMAC-SHA256>` keyed with the base64-decoded part of a `whsec_<base64>` secret.
During a secret rotation a webhook carries one signature per secret, space-separated, so a
receiver verifies with whichever secret it holds.

`verify` is what a receiver runs (the tests and the HAD simulator import it from here).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets as _random
import time
from collections.abc import Iterable, Mapping
from typing import Any

SECRET_PREFIX = "whsec_"
SIGNATURE_VERSION = "v1"
MIN_KEY_BYTES, MAX_KEY_BYTES = 24, 64  # the specification's bounds on a secret


class WebhookVerificationError(Exception):
    """The webhook is not authentic, or too old or too far in the future to be trusted."""


def generate_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(_random.token_bytes(32)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key of a `whsec_<base64>` secret; ValueError when it is not one."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError(f"a webhook secret starts with {SECRET_PREFIX!r}")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX):], validate=True)
    except binascii.Error as exc:
        raise ValueError("a webhook secret is 'whsec_' followed by base64") from exc
    if not MIN_KEY_BYTES <= len(key) <= MAX_KEY_BYTES:
        raise ValueError(f"a webhook secret holds {MIN_KEY_BYTES} to {MAX_KEY_BYTES} bytes, not {len(key)}")
    return key


def _signature(key: bytes, webhook_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    return base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def sign(secrets: Iterable[str], webhook_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header value: one `v1,<b64>` per secret."""
    return " ".join(f"{SIGNATURE_VERSION},{_signature(secret_key(s), webhook_id, timestamp, body)}" for s in secrets)


def signed_headers(secrets: Iterable[str], webhook_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secrets, webhook_id, timestamp, body),
        "content-type": "application/json",
    }


def verify(secret: str, headers: Mapping[str, str], body: bytes | str, tolerance_seconds: float = 300,
           now: float | None = None) -> Any:
    """Check a received webhook and return its decoded JSON body.

    Raises WebhookVerificationError when a header is missing, the timestamp is outside
    ±tolerance_seconds of `now` (replay protection), or no signature matches the secret."""
    lowered = {k.lower(): v for k, v in headers.items()}
    try:
        webhook_id = lowered["webhook-id"]
        timestamp_text = lowered["webhook-timestamp"]
        signatures = lowered["webhook-signature"]
    except KeyError as exc:
        raise WebhookVerificationError(f"missing header {exc.args[0]}") from exc
    try:
        timestamp = int(timestamp_text)
    except ValueError as exc:
        raise WebhookVerificationError("webhook-timestamp is not an integer") from exc
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_seconds:
        raise WebhookVerificationError("webhook-timestamp is outside the tolerance")
    payload = body.encode() if isinstance(body, str) else body
    try:
        expected = _signature(secret_key(secret), webhook_id, timestamp, payload)
    except ValueError as exc:
        raise WebhookVerificationError(str(exc)) from exc
    for candidate in signatures.split():
        version, _, value = candidate.partition(",")
        if version == SIGNATURE_VERSION and hmac.compare_digest(value, expected):
            return json.loads(payload)
    raise WebhookVerificationError("no matching signature")
