"""Standard Webhooks signing of notify's deliveries, and the secrets it signs with."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from reflexe_common.webhook_secrets import generate_secret, secret_key
from reflexe_notify.domain.signing import sign, signed_headers

SECRET = "whsec_" + base64.b64encode(bytes(range(32))).decode()
WEBHOOK_ID = "msg_2b1f0a54-9f0e-5c38-8d3e-2f5a0c7e9b10"
TIMESTAMP = 1_790_000_000
BODY = b'{"type":"offer.proposed","timestamp":"2026-09-21T14:13:20+00:00","data":{"referral_id":"r-1"}}'


def by_hand(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    """The specification, spelled out: HMAC-SHA256 of `id.timestamp.body` keyed with the
    base64-decoded part of the secret, base64-encoded, prefixed with `v1,`."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    digest = hmac.new(key, f"{webhook_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def test_signature_matches_the_specification_computed_by_hand() -> None:
    assert sign([SECRET], WEBHOOK_ID, TIMESTAMP, BODY) == by_hand(SECRET, WEBHOOK_ID, TIMESTAMP, BODY)


def test_a_body_beyond_ascii_is_signed_byte_for_byte() -> None:
    body = json.dumps({"data": {"why": "dossier clôturé"}}, ensure_ascii=False).encode()
    assert sign([SECRET], WEBHOOK_ID, TIMESTAMP, body) == by_hand(SECRET, WEBHOOK_ID, TIMESTAMP, body)


def test_signature_matches_the_standard_webhooks_reference_vector() -> None:
    # The vector of the Standard Webhooks reference libraries' test suites.
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    signature = sign([secret], "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}')
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_a_receiver_verifies_the_headers_with_the_reference_library() -> None:
    now = int(time.time())
    headers = signed_headers([SECRET], WEBHOOK_ID, now, BODY)
    assert headers["content-type"] == "application/json"
    assert headers["webhook-id"] == WEBHOOK_ID and headers["webhook-timestamp"] == str(now)
    assert Webhook(SECRET).verify(BODY, headers) == json.loads(BODY)
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(BODY.replace(b"r-1", b"r-2"), headers)


def test_during_a_rotation_either_secret_verifies() -> None:
    new, now = generate_secret(), int(time.time())
    headers = signed_headers([SECRET, new], WEBHOOK_ID, now, BODY)
    signatures = headers["webhook-signature"].split(" ")
    assert signatures == [by_hand(SECRET, WEBHOOK_ID, now, BODY), by_hand(new, WEBHOOK_ID, now, BODY)]
    for secret in (SECRET, new):
        Webhook(secret).verify(BODY, headers)
    with pytest.raises(WebhookVerificationError, match="No matching signature"):
        Webhook(generate_secret()).verify(BODY, headers)


def test_bad_secrets_are_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match="whsec_"):
        sign(["not-a-secret"], WEBHOOK_ID, TIMESTAMP, BODY)
    with pytest.raises(ValueError, match="base64"):
        secret_key("whsec_not*base64")
    with pytest.raises(ValueError, match="24 to 64 bytes"):
        sign(["whsec_" + base64.b64encode(b"short").decode()], WEBHOOK_ID, TIMESTAMP, BODY)


def test_generated_secrets_are_distinct_and_valid() -> None:
    a, b = generate_secret(), generate_secret()
    assert a != b and a.startswith("whsec_") and len(secret_key(a)) == 32
