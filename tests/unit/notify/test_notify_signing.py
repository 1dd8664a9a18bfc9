"""Standard Webhooks signing and verification."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest

from reflexe_notify.domain.signing import WebhookVerificationError, generate_secret, sign, signed_headers, verify

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


def test_signature_matches_the_standard_webhooks_reference_vector() -> None:
    # The vector of the Standard Webhooks reference libraries' test suites.
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    signature = sign([secret], "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}')
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_verify_returns_the_body_of_an_authentic_webhook() -> None:
    headers = signed_headers([SECRET], WEBHOOK_ID, TIMESTAMP, BODY)
    assert headers["content-type"] == "application/json"
    assert verify(SECRET, headers, BODY, now=TIMESTAMP + 10) == json.loads(BODY)


def test_header_names_are_case_insensitive_and_the_body_may_be_text() -> None:
    headers = {k.title(): v for k, v in signed_headers([SECRET], WEBHOOK_ID, TIMESTAMP, BODY).items()}
    assert verify(SECRET, headers, BODY.decode(), now=TIMESTAMP)["type"] == "offer.proposed"


def test_during_a_rotation_both_secrets_verify() -> None:
    new = generate_secret()
    headers = signed_headers([SECRET, new], WEBHOOK_ID, TIMESTAMP, BODY)
    signatures = headers["webhook-signature"].split(" ")
    assert signatures == [by_hand(SECRET, WEBHOOK_ID, TIMESTAMP, BODY), by_hand(new, WEBHOOK_ID, TIMESTAMP, BODY)]
    for secret in (SECRET, new):
        verify(secret, headers, BODY, now=TIMESTAMP)
    with pytest.raises(WebhookVerificationError, match="no matching signature"):
        verify(generate_secret(), headers, BODY, now=TIMESTAMP)


@pytest.mark.parametrize("skew", [-301, 301])
def test_a_timestamp_outside_the_tolerance_is_refused(skew: int) -> None:
    headers = signed_headers([SECRET], WEBHOOK_ID, TIMESTAMP, BODY)
    with pytest.raises(WebhookVerificationError, match="tolerance"):
        verify(SECRET, headers, BODY, now=TIMESTAMP + skew)
    verify(SECRET, headers, BODY, now=TIMESTAMP + skew, tolerance_seconds=400)


@pytest.mark.parametrize("tamper", ["body", "id", "timestamp"])
def test_tampering_breaks_the_signature(tamper: str) -> None:
    headers = signed_headers([SECRET], WEBHOOK_ID, TIMESTAMP, BODY)
    body = BODY
    if tamper == "body":
        body = BODY.replace(b"r-1", b"r-2")
    elif tamper == "id":
        headers["webhook-id"] = "msg_other"
    else:
        headers["webhook-timestamp"] = str(TIMESTAMP + 1)
    with pytest.raises(WebhookVerificationError):
        verify(SECRET, headers, body, now=TIMESTAMP)


def test_missing_headers_and_bad_secrets_are_reported() -> None:
    headers = signed_headers([SECRET], WEBHOOK_ID, TIMESTAMP, BODY)
    del headers["webhook-signature"]
    with pytest.raises(WebhookVerificationError, match="webhook-signature"):
        verify(SECRET, headers, BODY, now=TIMESTAMP)
    with pytest.raises(ValueError, match="whsec_"):
        sign(["not-a-secret"], WEBHOOK_ID, TIMESTAMP, BODY)
    with pytest.raises(ValueError, match="24 to 64 bytes"):
        sign(["whsec_" + base64.b64encode(b"short").decode()], WEBHOOK_ID, TIMESTAMP, BODY)


def test_generated_secrets_are_distinct_and_valid() -> None:
    a, b = generate_secret(), generate_secret()
    assert a != b and a.startswith("whsec_") and len(base64.b64decode(a[6:])) == 32
