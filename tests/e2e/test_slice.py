"""The first slice end to end, the four services as separate processes on real Kafka and
PostgreSQL: an HAD declares capacity → a hospital posts a referral → the referral is offered to
an HAD covering the care commune → a signed webhook reaches that HAD → it accepts → indicators
count referrals, offers and acceptances."""

from __future__ import annotations

import base64
import re

import httpx
import pytest

from tests.support.data import had_body, referral_body, unique_finess
from tests.support.platform import running_platform
from tests.support.receiver import WebhookReceiver, verify
from tests.support.services import eventually, token
from tests.support.territory import own_commune, own_department

pytestmark = pytest.mark.e2e
SECRET = "whsec_" + base64.b64encode(b"a-32-byte-secret-for-the-e2e-run").decode()
# This test's own department: its indicators count this test's referral, offer and acceptance alone.
DEPARTMENT = own_department()
COMMUNE = own_commune(DEPARTMENT)  # only this test's HAD serves it


def metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def test_referral_offered_webhooked_accepted_and_counted(topics, tmp_path):
    async with running_platform(topics, tmp_path) as services, WebhookReceiver() as receiver:
        referral = httpx.AsyncClient(base_url=services["referral"].url)
        capacity = httpx.AsyncClient(base_url=services["capacity"].url)
        notify = httpx.AsyncClient(base_url=services["notify"].url)
        indicators = httpx.AsyncClient(base_url=services["indicators"].url)
        clients = (referral, capacity, notify, indicators)
        try:
            for client, path in ((referral, f"/v1/departments/{DEPARTMENT}/referrals"),
                                 (capacity, f"/v1/departments/{DEPARTMENT}/capacity"), (notify, "/v1/subscriptions"),
                                 (indicators, f"/v1/indicators/departments/{DEPARTMENT}/daily")):
                assert (await client.get(path)).status_code == 401, f"{client.base_url}{path} answers without a token"

            had = unique_finess(DEPARTMENT)
            had_token = token("had", finess=had)
            assert (await capacity.put(f"/v1/hads/{had}", json=had_body("HAD Aigne", [COMMUNE], department=DEPARTMENT), headers=token("admin"))).status_code == 200
            subscribed = await notify.post("/v1/subscriptions", headers=had_token,
                                           json={"url": f"{receiver.url}/had/{had}", "event_types": ["offer.proposed"], "secret": SECRET})
            assert subscribed.status_code == 201, subscribed.text
            declared = await capacity.post(f"/v1/hads/{had}/capacity", headers=had_token,
                                           json={"places_available": 3, "admissions_possible_today": 2, "status": "OPEN"})
            assert declared.status_code == 201

            hospital = unique_finess(DEPARTMENT)
            posted = await referral.post("/v1/referrals", json=referral_body(hospital, COMMUNE), headers=token("hospital", finess=hospital))
            assert posted.status_code == 201
            referral_id = posted.json()["referral_id"]

            async def offer_webhook():
                return [d for d in receiver.of_type("offer.proposed") if d.json["data"]["referral_id"] == referral_id]

            [webhook] = await eventually(offer_webhook, timeout=30, what="the offer webhook")
            assert webhook.path == f"/hooks/had/{had}"  # the subscription's own URL
            assert verify(SECRET, webhook.headers, webhook.body)
            assert re.fullmatch(r"msg_[0-9a-f-]{36}", webhook.headers["webhook-id"])
            data = webhook.json["data"]
            assert data["had_finess"] == had and data["department"] == DEPARTMENT
            assert "pseudonym" not in webhook.body.decode() and "birth" not in webhook.body.decode()

            accepted = await referral.post(f"/v1/referrals/{referral_id}/offers/{data['offer_id']}/accept", headers=had_token)
            assert accepted.status_code == 200 and accepted.json()["status"] == "ACCEPTED"

            async def counted():
                text = (await indicators.get("/metrics")).text
                counts = (metric(text, "reflexe_referrals_total", department=DEPARTMENT),
                          metric(text, "reflexe_offers_total", department=DEPARTMENT, outcome="made"),
                          metric(text, "reflexe_offers_total", department=DEPARTMENT, outcome="accepted"))
                return text if counts == (1, 1, 1) else None

            text = await eventually(counted, timeout=30, what="indicators counting the slice")
            assert referral_id not in text and had not in text, "no referral or HAD id in metric labels"
            daily = await indicators.get(f"/v1/indicators/departments/{DEPARTMENT}/daily",
                                         headers=token("desk", department=DEPARTMENT))
            assert daily.json()["offers"]["accepted"] == 1
        finally:
            for client in clients:
                await client.aclose()
