"""The simulator's webhook receiver: Standard Webhooks verification, 401s, deduplication."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

from fastapi.testclient import TestClient
from standardwebhooks import Webhook

from reflexe_common.webhook_secrets import generate_secret
from reflexe_simulator.actors import Counters
from reflexe_simulator.webhooks import WebhookReceiver, authentic, build_app


def _headers(secret, body, webhook_id="msg_1", ts=None):
    ts = int(time.time()) if ts is None else ts
    signature = Webhook(secret).sign(webhook_id, datetime.fromtimestamp(ts, tz=UTC), body.decode())
    return {"webhook-id": webhook_id, "webhook-timestamp": str(ts), "webhook-signature": signature,
            "content-type": "application/json"}


def test_a_correct_signature_is_accepted_and_a_wrong_one_rejected():
    secret, body = generate_secret(), b'{"type": "offer.proposed", "data": {}}'
    headers = _headers(secret, body)
    assert authentic(secret, headers, body)
    assert not authentic(generate_secret(), headers, body)  # another secret
    assert not authentic(secret, headers, body + b" ")  # tampered body
    assert not authentic(secret, {**headers, "webhook-id": "msg_2"}, body)  # another id
    assert not authentic(secret, {**headers, "webhook-signature": "v1,AAAA"}, body)
    assert not authentic(secret, {**headers, "webhook-signature": "garbage"}, body)  # malformed
    assert not authentic(secret, {**headers, "webhook-timestamp": "soon"}, body)
    assert not authentic(secret, {k: v for k, v in headers.items() if k != "webhook-signature"}, body)
    old = _headers(secret, body, ts=int(time.time()) - 3600)
    assert not authentic(secret, old, body)  # replayed long after


def test_during_a_secret_rotation_either_signature_verifies():
    old, new, body = generate_secret(), generate_secret(), b"{}"
    ts = int(time.time())
    both = f"{_headers(old, body, 'msg_9', ts)['webhook-signature']} {_headers(new, body, 'msg_9', ts)['webhook-signature']}"
    headers = {"webhook-id": "msg_9", "webhook-timestamp": str(ts), "webhook-signature": both}
    assert authentic(old, headers, body) and authentic(new, headers, body)
    assert not authentic(generate_secret(), headers, body)


def test_the_receiver_rejects_bad_signatures_with_401_and_deduplicates_by_webhook_id():
    counters, seen = Counters(), []

    async def handler(delivery):
        seen.append(delivery)

    receiver = WebhookReceiver(handler, counters)
    secret = receiver.secret_for("had", "349000018")
    body = json.dumps({"type": "offer.proposed", "timestamp": "2025-03-10T10:00:00+00:00",
                       "data": {"referral_id": "r1", "offer_id": "o1", "had_finess": "349000018"}}).encode()
    client = TestClient(build_app(receiver))
    url = "/hooks/had/349000018"

    bad = client.post(url, content=body, headers=_headers(generate_secret(), body, "msg_a"))
    assert bad.status_code == 401 and counters["bad_signatures"] == 1
    good = _headers(secret, body, "msg_b")
    assert client.post(url, content=body, headers=good).status_code == 200
    assert client.post(url, content=body, headers=good).status_code == 200  # redelivery
    assert len(seen) == 1 and seen[0].type == "offer.proposed" and seen[0].data["offer_id"] == "o1"
    assert counters["webhooks_received"] == 2 and counters["webhooks_duplicate"] == 1
    assert client.post("/hooks/had/000000000", content=body, headers=good).status_code == 404


def test_interoperates_with_the_notify_service_signer_and_subscription_schema():
    import pytest

    signing = pytest.importorskip("reflexe_notify.domain.signing")
    schemas = pytest.importorskip("reflexe_notify.entrypoints.schemas")
    secret, body, ts = generate_secret(), b'{"type": "offer.proposed", "data": {}}', int(time.time())
    headers = signing.signed_headers([secret], "msg_x", ts, body)
    assert authentic(secret, headers, body)
    assert not authentic(generate_secret(), headers, body)
    schemas.SubscriptionIn.model_validate({"url": "http://127.0.0.1:8090/hooks/had/349000018", "event_types": [],
                                           "secret": secret})
