"""Who may call what, on what: every caller × every endpoint of every service × a resource in and
out of the caller's scope, on the four services running in-process on the real Kafka and
PostgreSQL, with data this module creates. The rule is docs/security.md's:

- no valid bearer token (none, expired, another issuer's): 401, whatever the resource;
- a role that may never call the endpoint: 403 (the ARS on referral rows: 403 ARS_READS_INDICATORS);
- a resource named by a public identifier (a department, an establishment's FINESS, a recipient)
  outside the caller's area: 403 OUT_OF_SCOPE;
- a resource named by an opaque id (referral, subscription, delivery) that is not the caller's:
  404, the answer for one that does not exist;
- otherwise allowed: 2xx.

The endpoints are read from each app's routes: an endpoint added without a line here fails
`test_every_endpoint_has_a_matrix_entry`.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from reflexe_capacity.entrypoints.app import build_app as build_capacity
from reflexe_capacity.settings import CapacitySettings
from reflexe_common.geography import Geography
from reflexe_indicators.entrypoints.app import build_app as build_indicators
from reflexe_indicators.settings import IndicatorsSettings
from reflexe_notify.entrypoints.app import build_app as build_notify
from reflexe_notify.settings import NotifySettings
from reflexe_referral.entrypoints import fhir_mapping as fm
from reflexe_referral.entrypoints.app import build_app as build_referral
from reflexe_referral.settings import ReferralSettings
from tests.support.data import had_body, referral_body, unique_finess
from tests.support.fhir_data import healthcare_service_declaration, service_request_resource
from tests.support.issuer import suite_issuer
from tests.support.kafka import matching_starts_from_now
from tests.support.platform import in_process_env
from tests.support.receiver import WebhookReceiver
from tests.support.services import NOTIFY_ENV, eventually, serve_in_process, token
from tests.support.territory import on_paris_time, own_communes, own_department

pytestmark = pytest.mark.integration

# The callers' department, and one of another region: both only this module's, so that each
# desk's lists, streams and deliveries hold this module's data alone.
IN = own_department()
REGION = Geography.load().department(IN).region_code
OUT = own_department(lambda d: on_paris_time(d) and d.region_code != REGION)
# HAD_A_COMMUNE served by HAD A only, NO_HAD_COMMUNE by nobody (referrals there wait for the desk),
# DESK_PICK_COMMUNE the zone of the HAD the desk picks, TWO_HADS_COMMUNE the visibility test's two
# competing HADs; HAD_B_COMMUNE served by HAD B only.
HAD_A_COMMUNE, NO_HAD_COMMUNE, DESK_PICK_COMMUNE, TWO_HADS_COMMUNE = own_communes(4, IN)
HAD_B_COMMUNE, NO_HAD_COMMUNE_OUT = own_communes(2, OUT)

CALLERS = ("hospital", "had", "liaison", "desk", "ars", "admin", "none", "expired", "foreign", "desk_session")
SCOPES = ("in", "out")
OK = "2xx"
SERVICES = ("referral", "capacity", "indicators", "notify")


# ------------------------------------------------------------------ the world the matrix runs in


@dataclass
class World:
    urls: dict[str, str]
    clients: dict[str, httpx.AsyncClient]
    hospital_a: str
    hospital_b: str
    had_a: str
    had_b: str
    had_pick: str
    receiver: WebhookReceiver
    shared: dict[str, Any] = field(default_factory=dict)  # referral ids, subscription ids, ...
    failed: dict[str, list[str]] = field(default_factory=dict)  # recipient -> FAILED webhook ids
    desk_session: str = ""

    def headers(self, caller: str) -> dict[str, str]:
        return {
            "hospital": lambda: token("hospital", finess=self.hospital_a),
            "had": lambda: token("had", finess=self.had_a),
            # HAD A's liaison nurse, in the department HAD A serves.
            "liaison": lambda: token("liaison", finess=self.had_a, department=IN),
            "desk": lambda: token("desk", department=IN),
            "ars": lambda: token("ars", region=REGION),
            "admin": lambda: token("admin"),
            "none": dict,
            "expired": lambda: {"Authorization": f"Bearer {suite_issuer().token('admin', ttl_seconds=-300)}"},
            "foreign": lambda: {"Authorization": f"Bearer {foreign_token()}"},
            # The page's session cookie, sent everywhere: it must open the desk pages only.
            "desk_session": lambda: {"Cookie": f"reflexe_desk={self.desk_session}"},
        }[caller]()

    def own_recipient(self, caller: str) -> str:
        return {"hospital": f"hospital:{self.hospital_a}", "desk": f"desk:{IN}"}.get(caller, f"had:{self.had_a}")

    def other_recipient(self, caller: str) -> str:
        return {"hospital": f"hospital:{self.hospital_b}", "desk": f"desk:{OUT}"}.get(caller, f"had:{self.had_b}")

    # ---- resources made for one cell (an allowed change consumes its resource)

    async def post_referral(self, hospital: str, commune: str, **overrides: Any) -> str:
        response = await self.clients["referral"].post("/v1/referrals", json=referral_body(hospital, commune, **overrides),
                                                       headers=token("hospital", finess=hospital))
        assert response.status_code == 201, response.text
        return response.json()["referral_id"]

    async def waiting_referral(self, scope: str) -> str:
        """An open referral no HAD can take (the desk's work), in or out of the callers' department."""
        if scope == "in":
            return await self.post_referral(self.hospital_a, NO_HAD_COMMUNE)
        return await self.post_referral(self.hospital_b, NO_HAD_COMMUNE_OUT)

    async def offered(self, hospital: str, commune: str, had: str) -> dict[str, Any]:
        referral_id = await self.post_referral(hospital, commune)
        return await self.status(referral_id, "OFFERED", had=had)

    async def status(self, referral_id: str, status: str, had: str | None = None, timeout: float = 60) -> dict:
        async def probe():
            body = (await self.clients["referral"].get(f"/v1/referrals/{referral_id}", headers=token("admin"))).json()
            offer = body.get("current_offer")
            return body if body["status"] == status and (had is None or (offer and offer["had_finess"] == had)) else None

        return await eventually(probe, timeout=timeout, interval=0.05, what=f"referral {referral_id} {status}")

    async def offered_to_a(self) -> dict[str, Any]:
        return await self.offered(self.hospital_a, HAD_A_COMMUNE, self.had_a)

    async def accepted_by_a(self) -> str:
        offered = await self.offered_to_a()
        path = f"/v1/referrals/{offered['referral_id']}/offers/{offered['current_offer']['offer_id']}/accept"
        response = await self.clients["referral"].post(path, headers=token("had", finess=self.had_a))
        assert response.status_code == 200, response.text
        return offered["referral_id"]

    async def pending_evaluation_at_a(self) -> str:
        offered = await self.offered_to_a()
        path = (f"/v1/referrals/{offered['referral_id']}/offers/{offered['current_offer']['offer_id']}"
                "/accept-pending-evaluation")
        response = await self.clients["referral"].post(path, headers=token("had", finess=self.had_a))
        assert response.status_code == 200, response.text
        return offered["referral_id"]

    async def admitted_by_a(self) -> str:
        referral_id = await self.accepted_by_a()
        response = await self.clients["referral"].post(f"/v1/referrals/{referral_id}/admission",
                                                       headers=token("had", finess=self.had_a))
        assert response.status_code == 200, response.text
        return referral_id

    async def subscription(self, recipient: str, rotated: bool = False) -> str:
        notify = self.clients["notify"]
        response = await notify.post("/v1/subscriptions", json={"url": self.receiver.url, "recipient": recipient},
                                     headers=token("admin"))
        assert response.status_code == 201, response.text
        subscription_id = response.json()["id"]
        if rotated:
            response = await notify.post(f"/v1/subscriptions/{subscription_id}/rotate", headers=token("admin"))
            assert response.status_code == 200, response.text
        return subscription_id

    def failed_delivery(self, recipient: str) -> str:
        assert self.failed.get(recipient), f"no FAILED delivery left for {recipient}"
        return self.failed[recipient].pop()


def foreign_token() -> str:
    """A well-formed token from an issuer the services do not trust, with its own key."""
    key = _foreign_key()
    now = int(time.time())
    claims = {"iss": "https://idp.elsewhere.example/realms/other", "aud": "reflexe", "sub": "intruder", "iat": now,
              "nbf": now, "exp": now + 300, "realm_access": {"roles": ["admin"]}}
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": "elsewhere-1"})


_foreign: list[rsa.RSAPrivateKey] = []


def _foreign_key() -> rsa.RSAPrivateKey:
    if not _foreign:
        _foreign.append(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    return _foreign[0]


@pytest.fixture(scope="module")
async def apps(topics) -> AsyncIterator[dict[str, Any]]:
    env = in_process_env(topics)
    await matching_starts_from_now(topics)
    referral_app = build_referral(ReferralSettings(**env))
    capacity_app = build_capacity(CapacitySettings(**env))
    indicators_app = build_indicators(IndicatorsSettings(**env))
    async with serve_in_process(referral_app) as referral_url, serve_in_process(capacity_app) as capacity_url, \
            serve_in_process(indicators_app) as indicators_url:
        notify_app = build_notify(NotifySettings(
            **env, **NOTIFY_ENV, NOTIFY_MAX_ATTEMPTS=1, NOTIFY_IDLE_POLL_SECONDS=0.2, NOTIFY_TIMEOUT_SECONDS=2,
            NOTIFY_REFERRAL_URL=referral_url, NOTIFY_CAPACITY_URL=capacity_url))
        async with serve_in_process(notify_app) as notify_url:
            yield {"apps": {"referral": referral_app, "capacity": capacity_app, "indicators": indicators_app,
                            "notify": notify_app},
                   "urls": {"referral": referral_url, "capacity": capacity_url, "indicators": indicators_url,
                            "notify": notify_url}}


async def register(capacity: httpx.AsyncClient, department: str, communes: list[str], places: int = 30) -> str:
    finess = unique_finess(department)
    response = await capacity.put(f"/v1/hads/{finess}", json=had_body(f"HAD {finess}", communes, department=department),
                                  headers=token("admin"))
    assert response.status_code == 200, response.text
    response = await capacity.post(f"/v1/hads/{finess}/capacity", headers=token("had", finess=finess),
                                   json={"places_available": places, "admissions_possible_today": places, "status": "OPEN"})
    assert response.status_code == 201, response.text
    return finess


@pytest.fixture(scope="module")
async def world(apps) -> AsyncIterator[World]:
    receiver = await WebhookReceiver(answer=lambda _id, _nth: 500).start()  # every webhook fails: deliveries to retry
    clients = {name: httpx.AsyncClient(base_url=url, timeout=60) for name, url in apps["urls"].items()}
    try:
        capacity = clients["capacity"]
        w = World(urls=apps["urls"], clients=clients, hospital_a=unique_finess(IN), hospital_b=unique_finess(OUT),
                  had_a=await register(capacity, IN, [HAD_A_COMMUNE]),
                  had_b=await register(capacity, OUT, [HAD_B_COMMUNE]),
                  had_pick=await register(capacity, IN, [DESK_PICK_COMMUNE], places=50), receiver=receiver)
        recipients = [f"had:{w.had_a}", f"had:{w.had_b}", f"hospital:{w.hospital_a}", f"hospital:{w.hospital_b}",
                      f"desk:{IN}", f"desk:{OUT}"]
        w.shared["subscription"] = {r: await w.subscription(r) for r in recipients}

        # A new matcher first re-reads what its group had not committed: the first offer may take a while.
        first = await w.post_referral(w.hospital_a, HAD_A_COMMUNE)
        in_offered = await w.status(first, "OFFERED", had=w.had_a, timeout=180)
        out_offered = await w.offered(w.hospital_b, HAD_B_COMMUNE, w.had_b)
        w.shared["referral_in"], w.shared["offer_in"] = first, in_offered["current_offer"]["offer_id"]
        w.shared["referral_out"], w.shared["offer_out"] = out_offered["referral_id"], out_offered["current_offer"]["offer_id"]
        for _ in range(3):  # more offers to HAD A: FAILED deliveries to retry
            await w.offered_to_a()
        for hospital, scope in ((w.hospital_a, "in"), (w.hospital_a, "in"), (w.hospital_b, "out")):
            referral_id = await w.waiting_referral(scope)
            response = await clients["referral"].post(f"/v1/referrals/{referral_id}/cancel", json={"reason": "OTHER"},
                                                      headers=token("hospital", finess=hospital))
            assert response.status_code == 200, response.text  # its hospital hears of it: a delivery

        wanted = {f"had:{w.had_a}": 3, f"had:{w.had_b}": 1, f"hospital:{w.hospital_a}": 2,
                  f"hospital:{w.hospital_b}": 1, f"desk:{IN}": 2, f"desk:{OUT}": 1}

        async def all_failed():
            rows = (await clients["notify"].get("/v1/deliveries", params={"status": "FAILED", "limit": 100},
                                                headers=token("admin"))).json()
            ours = {r: [d["webhook_id"] for d in rows if d["recipient"] == r] for r in wanted}
            return ours if all(len(ours[r]) >= n for r, n in wanted.items()) else None

        w.failed = await eventually(all_failed, timeout=120, interval=0.2, what="FAILED deliveries for every recipient")
        w.desk_session = await log_in_desk(w.urls["notify"], IN)
        yield w
    finally:
        for client in clients.values():
            await client.aclose()
        await receiver.stop()


async def log_in_desk(notify_url: str, department: str) -> str:
    """A desk nurse's browser login (authorization code with PKCE at the suite's issuer); the session id."""
    async with httpx.AsyncClient(base_url=notify_url) as browser:
        start = await browser.get("/desk/login", params={"login_hint": f"desk:department={department}"})
        assert start.status_code == 303, start.text
        async with httpx.AsyncClient() as provider:
            back = await provider.get(start.headers["location"])
        assert back.status_code == 302, back.text
        returned = urlsplit(back.headers["location"])
        done = await browser.get(f"{returned.path}?{returned.query}")
        assert done.status_code == 303, done.text
        return browser.cookies["reflexe_desk"]


# ------------------------------------------------------------------ expectations


def api(hospital=(403, 403), had=(403, 403), desk=(403, 403), ars=(403, 403), admin=(OK, OK),
        liaison=(403, 403)) -> dict[str, tuple]:
    """A bearer endpoint: no valid token is 401; a page session is no bearer token either."""
    return {"hospital": hospital, "had": had, "liaison": liaison, "desk": desk, "ars": ars, "admin": admin,
            **{caller: (401, 401) for caller in ("none", "expired", "foreign", "desk_session")}}


def public(status: Any = OK, desk_session: Any = None) -> dict[str, tuple]:
    expect = {caller: (status, status) for caller in CALLERS}
    if desk_session is not None:
        expect["desk_session"] = (desk_session, desk_session)
    return expect


def page(without_session: Any, session: tuple = (OK, 403)) -> dict[str, tuple]:
    """A desk page: opened by the page's session cookie only, never by a bearer token."""
    return {**{caller: (without_session, without_session) for caller in CALLERS}, "desk_session": session}


ARS_ROWS = (403, "ARS_READS_INDICATORS")
HIDDEN = 404
SCOPED = (OK, 403)  # in: allowed; out: OUT_OF_SCOPE
OWN = (OK, HIDDEN)  # in: allowed; out: as if it did not exist

Build = Callable[[World, str, str, bool], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class Endpoint:
    service: str
    method: str
    path: str
    expect: dict[str, tuple]
    build: Build  # (world, caller, scope, allowed) -> request path and keyword arguments
    check: Callable[[World, str, httpx.Response], None] | None = None  # more about an allowed answer
    stream: bool = False


def fixed(path: str, **kwargs: Any) -> Build:
    async def build(w: World, caller: str, scope: str, allowed: bool) -> dict[str, Any]:
        return {"url": path, **kwargs}

    return build


def by_department(template: str, **kwargs: Any) -> Build:
    async def build(w: World, caller: str, scope: str, allowed: bool) -> dict[str, Any]:
        return {"url": template.format(department=IN if scope == "in" else OUT), **kwargs}

    return build


def liaison_rows(w: World, caller: str, response: httpx.Response) -> None:
    """The liaison nurse's rows: her department's, without birth year, sex, consents or another HAD."""
    rows = response.json()["referrals"]
    assert rows, "the department's open referrals"
    for row in rows:
        assert row["department"] == IN
        assert not {"conditions", "tried_hads", "current_offer", "accepted_had", "clocks"} & row.keys()
        assert not {"birth_year", "sex"} & row["patient"].keys()


def by_had(template: str, **kwargs: Any) -> Build:
    async def build(w: World, caller: str, scope: str, allowed: bool) -> dict[str, Any]:
        return {"url": template.format(finess=w.had_a if scope == "in" else w.had_b), **kwargs}

    return build


def shared_referral(template: str, **kwargs: Any) -> Build:
    async def build(w: World, caller: str, scope: str, allowed: bool) -> dict[str, Any]:
        return {"url": template.format(referral_id=w.shared[f"referral_{scope}"]), **kwargs}

    return build


def waiting_referral(template: str, body: Callable[[World, str], dict[str, Any]]) -> Build:
    """An open referral; a fresh one for each change that will be allowed."""
    async def build(w: World, caller: str, scope: str, allowed: bool) -> dict[str, Any]:
        if allowed:
            referral_id = await w.waiting_referral(scope)
        else:
            referral_id = w.shared["referral_in" if scope == "in" else "referral_out"]
        return {"url": template.format(referral_id=referral_id), "json": body(w, scope)}

    return build


async def update_request(w: World, caller: str, scope: str, allowed: bool) -> dict[str, Any]:
    """PATCH the request's conditions on the version read: a fresh referral waiting for the GP's agreement
    (INCOMPLETE: nothing else moves its version) for each update that will be allowed."""
    if allowed:
        hospital, commune = (w.hospital_a, NO_HAD_COMMUNE) if scope == "in" else (w.hospital_b, NO_HAD_COMMUNE_OUT)
        referral_id = await w.post_referral(hospital, commune, conditions={"gp_agreement": False})
    else:
        referral_id = w.shared["referral_in" if scope == "in" else "referral_out"]
    return {"url": f"/v1/referrals/{referral_id}/request", "json": {"conditions": {"gp_agreement": True}},
            "headers": {"If-Match": '"1"'}}


def had_answer(action: str, body: dict[str, Any] | None = None) -> Build:
    async def build(w: World, caller: str, scope: str, allowed: bool) -> dict[str, Any]:
        if scope == "out":
            referral_id, offer_id = w.shared["referral_out"], w.shared["offer_out"]
        elif allowed:
            offered = await w.offered_to_a()
            referral_id, offer_id = offered["referral_id"], offered["current_offer"]["offer_id"]
        else:
            referral_id, offer_id = w.shared["referral_in"], w.shared["offer_in"]
        return {"url": f"/v1/referrals/{referral_id}/offers/{offer_id}/{action}", **({"json": body} if body else {})}

    return build


def had_stay(action: str) -> Build:
    async def build(w: World, caller: str, scope: str, allowed: bool) -> dict[str, Any]:
        if scope == "out":
            referral_id = w.shared["referral_out"]
        elif allowed:
            referral_id = await (w.accepted_by_a() if action == "admission" else w.admitted_by_a())
        else:
            referral_id = w.shared["referral_in"]
        return {"url": f"/v1/referrals/{referral_id}/{action}"}

    return build


def had_evaluation(action: str, body: dict[str, Any] | None = None) -> Build:
    """An acceptance pending evaluation at HAD A (a fresh one for each allowed change)."""
    async def build(w: World, caller: str, scope: str, allowed: bool) -> dict[str, Any]:
        if scope == "out":
            referral_id = w.shared["referral_out"]
        elif allowed:
            referral_id = await w.pending_evaluation_at_a()
        else:
            referral_id = w.shared["referral_in"]
        return {"url": f"/v1/referrals/{referral_id}/evaluation/{action}", **({"json": body} if body else {})}

    return build


async def fhir_task_answer(w: World, caller: str, scope: str, allowed: bool) -> dict[str, Any]:
    """PUT /fhir/Task/{id}: the FHIR form of had_answer("accept"), on the same offers."""
    path = (await had_answer("accept")(w, caller, scope, allowed))["url"]  # /v1/referrals/{id}/offers/{offer}/accept
    referral_id, offer_id = path.split("/")[3], path.split("/")[5]
    task = {"resourceType": "Task", "id": referral_id, "status": "accepted", "intent": "order",
            "input": [{"type": {"coding": [{"system": fm.TASK_INPUT_SYSTEM, "code": fm.OFFER_INPUT}]},
                       "valueString": offer_id}]}
    return {"url": f"/fhir/Task/{referral_id}", "json": task, "headers": {"Content-Type": fm.FHIR_JSON}}


async def fhir_update_request(w: World, caller: str, scope: str, allowed: bool) -> dict[str, Any]:
    """PUT /fhir/ServiceRequest/{id}: the FHIR form of update_request (the GP's agreement given), on the
    same referrals, sent back as read with the version read."""
    referral_id = (await update_request(w, caller, scope, allowed))["url"].split("/")[3]  # /v1/referrals/{id}/request
    read = await w.clients["referral"].get(f"/fhir/ServiceRequest/{referral_id}", headers=token("admin"))
    assert read.status_code == 200, read.text
    resource = read.json()
    for extension in resource["extension"]:
        if extension["url"] == fm.EXT_GP_AGREEMENT:
            extension["valueBoolean"] = True
    return {"url": f"/fhir/ServiceRequest/{referral_id}", "json": resource,
            "headers": {"Content-Type": fm.FHIR_JSON, "If-Match": read.headers["etag"]}}


async def fhir_declare(w: World, caller: str, scope: str, allowed: bool) -> dict[str, Any]:
    """PUT /fhir/HealthcareService/{finess}: the FHIR form of the REST declaration, with the same figures."""
    finess = w.had_a if scope == "in" else w.had_b
    return {"url": f"/fhir/HealthcareService/{finess}", "headers": {"Content-Type": fm.FHIR_JSON},
            "json": healthcare_service_declaration(finess, places=30, admissions=30)}


async def fhir_post_referral(w: World, caller: str, scope: str, allowed: bool) -> dict[str, Any]:
    resource = service_request_resource(w.hospital_a if scope == "in" else w.hospital_b)
    for extension in resource["extension"]:
        if extension["url"] == fm.EXT_CARE_COMMUNE:
            extension["valueCode"] = NO_HAD_COMMUNE
    return {"url": "/fhir/ServiceRequest", "json": resource, "headers": {"Content-Type": fm.FHIR_JSON}}


async def post_referral(w: World, caller: str, scope: str, allowed: bool) -> dict[str, Any]:
    return {"url": "/v1/referrals", "json": referral_body(w.hospital_a if scope == "in" else w.hospital_b, NO_HAD_COMMUNE)}


async def put_had(w: World, caller: str, scope: str, allowed: bool) -> dict[str, Any]:
    department, commune = (IN, DESK_PICK_COMMUNE) if scope == "in" else (OUT, NO_HAD_COMMUNE_OUT)
    # Never declared: never a candidate, so the matrix's offers stay where they are.
    return {"url": f"/v1/hads/{unique_finess(department)}",
            "json": had_body("HAD de la matrice", [commune], department=department)}


def indicators_query(path: str, had_in: dict[str, str], had_out: dict[str, str], **params: str) -> Build:
    """An HAD sees its own HAD-level figures; the others ask for a department."""
    async def build(w: World, caller: str, scope: str, allowed: bool) -> dict[str, Any]:
        if caller == "had":
            scoped = had_in if scope == "in" else had_out
        else:
            scoped = {"department": IN if scope == "in" else OUT}
        return {"url": path, "params": {**params, **scoped}}

    return build


async def start_replay(w: World, caller: str, scope: str, allowed: bool) -> dict[str, Any]:
    if allowed:  # one replay at a time: the previous cell's must be over
        async def idle():
            status = (await w.clients["indicators"].get("/v1/indicators/replay", headers=token("admin"))).json()
            return status["replay"] is None or status["replay"]["state"] != "building"

        await eventually(idle, timeout=120, interval=0.2, what="the previous replay over")
    return {"url": "/v1/indicators/replay"}


def audit_query(w: World, caller: str, scope: str, allowed: bool) -> Awaitable[dict[str, Any]]:
    return fixed("/v1/audit", params={"department": IN if scope == "in" else OUT})(w, caller, scope, allowed)


async def subscribe(w: World, caller: str, scope: str, allowed: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"url": w.receiver.url}
    if caller == "admin" or scope == "out":
        body["recipient"] = w.own_recipient(caller) if scope == "in" else w.other_recipient(caller)
    return {"url": "/v1/subscriptions", "json": body}


def own_subscription(template: str, rotated: bool = False) -> Build:
    async def build(w: World, caller: str, scope: str, allowed: bool) -> dict[str, Any]:
        if allowed:  # a fresh one: the change consumes it
            recipient = w.own_recipient(caller) if scope == "in" else w.other_recipient(caller)
            subscription_id = await w.subscription(recipient, rotated=rotated)
        else:
            recipient = w.own_recipient(caller) if scope == "in" else f"had:{w.had_b}"
            subscription_id = w.shared["subscription"][recipient]
        return {"url": template.format(id=subscription_id)}

    return build


async def retry(w: World, caller: str, scope: str, allowed: bool) -> dict[str, Any]:
    if allowed:  # a FAILED one of its own for each retry (an admin's "out" one: another department's)
        webhook_id = w.failed_delivery(w.own_recipient(caller) if scope == "in" else f"desk:{OUT}")
    else:
        webhook_id = w.failed[f"had:{w.had_a}" if scope == "in" else f"had:{w.had_b}"][0]
    return {"url": f"/v1/deliveries/{webhook_id}/retry"}


def only_own_items(w: World, caller: str, response: httpx.Response) -> None:
    """A list answers the caller's own items only; a desk's delivery log is its department's."""
    if caller == "admin":
        return
    key, own = ("department", IN) if caller == "desk" and "webhook_id" in response.text else ("recipient", w.own_recipient(caller))
    assert all(item[key] == own for item in response.json()), response.text


async def desk_action(w: World, caller: str, scope: str, allowed: bool) -> dict[str, Any]:
    referral_id = await w.waiting_referral("in") if allowed else w.shared["referral_in"]
    department = IN if scope == "in" else OUT
    return {"url": f"/desk/{department}/actions/close", "data": {"referral_id": referral_id, "reason": "OTHER"},
            "headers": {"Origin": w.urls["notify"], "Accept": "application/json"}}


async def desk_referral_page(w: World, caller: str, scope: str, allowed: bool) -> dict[str, Any]:
    """A referral's page on its own department's desk page, or another department's on that one's."""
    department = IN if scope == "in" else OUT
    return {"url": f"/desk/{department}/referrals/{w.shared[f'referral_{scope}']}"}


def ops(service: str) -> list[Endpoint]:
    """What every service answers without a token: probes, metrics and the API's own documentation."""
    return [Endpoint(service, "GET", path, public(), fixed(path))
            for path in ("/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc")]


def audit_trail(service: str) -> Endpoint:
    return Endpoint(service, "GET", "/v1/audit", api(ars=SCOPED), audit_query)


TODAY = date.today().isoformat()
MONTH = date.today().strftime("%Y-%m")
CLOSE = {"reason": "OTHER", "text": ""}

MATRIX: list[Endpoint] = [
    # ---- referral: rows with birth year, sex and commune; the ARS reads none of them
    Endpoint("referral", "POST", "/v1/referrals", api(hospital=SCOPED), post_referral),
    Endpoint("referral", "GET", "/v1/referrals/{referral_id}",
             api(hospital=OWN, had=OWN, desk=OWN, ars=(ARS_ROWS, ARS_ROWS)), shared_referral("/v1/referrals/{referral_id}")),
    Endpoint("referral", "GET", "/v1/referrals/{referral_id}/timeline",
             api(hospital=OWN, had=OWN, desk=OWN, ars=(ARS_ROWS, ARS_ROWS)),
             shared_referral("/v1/referrals/{referral_id}/timeline")),
    # An admin does not speak for an HAD: answering, admitting and discharging are the HAD's.
    Endpoint("referral", "POST", "/v1/referrals/{referral_id}/offers/{offer_id}/accept",
             api(had=OWN, admin=(403, 403)), had_answer("accept")),
    Endpoint("referral", "POST", "/v1/referrals/{referral_id}/offers/{offer_id}/decline",
             api(had=OWN, admin=(403, 403)), had_answer("decline", {"reason": "NO_CAPACITY", "text": ""})),
    Endpoint("referral", "POST", "/v1/referrals/{referral_id}/offers/{offer_id}/accept-pending-evaluation",
             api(had=OWN, admin=(403, 403)), had_answer("accept-pending-evaluation")),
    Endpoint("referral", "POST", "/v1/referrals/{referral_id}/evaluation/confirm", api(had=OWN, admin=(403, 403)),
             had_evaluation("confirm")),
    Endpoint("referral", "POST", "/v1/referrals/{referral_id}/evaluation/withdraw", api(had=OWN, admin=(403, 403)),
             had_evaluation("withdraw", {"reason": "MEDICAL_NOT_ELIGIBLE", "text": ""})),
    # The avis HAD is the liaison nurse's own: in a department her HAD serves (else as if unknown).
    Endpoint("referral", "POST", "/v1/referrals/{referral_id}/avis", api(liaison=OWN, admin=(403, 403)),
             waiting_referral("/v1/referrals/{referral_id}/avis", lambda w, scope: {"eligible": True, "text": ""})),
    Endpoint("referral", "POST", "/v1/referrals/{referral_id}/admission", api(had=OWN, admin=(403, 403)),
             had_stay("admission")),
    Endpoint("referral", "POST", "/v1/referrals/{referral_id}/discharge", api(had=OWN, admin=(403, 403)),
             had_stay("discharge")),
    Endpoint("referral", "POST", "/v1/referrals/{referral_id}/cancel", api(hospital=OWN, desk=OWN),
             waiting_referral("/v1/referrals/{referral_id}/cancel", lambda w, scope: CLOSE)),
    Endpoint("referral", "PATCH", "/v1/referrals/{referral_id}/request", api(hospital=OWN, desk=OWN), update_request),
    Endpoint("referral", "POST", "/v1/referrals/{referral_id}/desk/offer", api(desk=OWN),
             waiting_referral("/v1/referrals/{referral_id}/desk/offer", lambda w, scope: {"had_finess": w.had_pick})),
    Endpoint("referral", "POST", "/v1/referrals/{referral_id}/desk/widen", api(desk=OWN),
             waiting_referral("/v1/referrals/{referral_id}/desk/widen",
                              lambda w, scope: {"departments": ["30"] if scope == "in" else ["84"]})),
    Endpoint("referral", "POST", "/v1/referrals/{referral_id}/desk/close", api(desk=OWN),
             waiting_referral("/v1/referrals/{referral_id}/desk/close", lambda w, scope: CLOSE)),
    Endpoint("referral", "GET", "/v1/departments/{department}/referrals", api(desk=SCOPED, ars=(ARS_ROWS, ARS_ROWS)),
             by_department("/v1/departments/{department}/referrals")),
    # A liaison nurse's list to give the avis on: her HAD's departments only, a reduced view.
    Endpoint("referral", "GET", "/v1/liaison/departments/{department}/referrals", api(liaison=SCOPED, admin=(403, 403)),
             by_department("/v1/liaison/departments/{department}/referrals"), check=liaison_rows),
    # Only the HL7 gateway's system token (role gateway, no caller of this matrix) reports movements.
    Endpoint("referral", "POST", "/v1/patient-events", api(admin=(403, 403)),
             fixed("/v1/patient-events", json={"message_key": "340780477/MATRIX-1", "sender_finess": "340780477",
                                               "effect": "HOSPITALISED", "pseudonym": "0" * 64,
                                               "occurred_at": "2026-11-26T09:00:00+00:00"})),
    # The FHIR API: the same rules as the REST endpoints above (a search answers only the caller's own).
    Endpoint("referral", "GET", "/fhir/metadata", api(hospital=(OK, OK), had=(OK, OK), liaison=(OK, OK), desk=(OK, OK),
                                         ars=(OK, OK)), fixed("/fhir/metadata")),
    Endpoint("referral", "POST", "/fhir/ServiceRequest", api(hospital=SCOPED), fhir_post_referral),
    Endpoint("referral", "GET", "/fhir/ServiceRequest/{referral_id}", api(hospital=OWN, had=OWN, desk=OWN),
             shared_referral("/fhir/ServiceRequest/{referral_id}")),
    Endpoint("referral", "PUT", "/fhir/ServiceRequest/{referral_id}", api(hospital=OWN, desk=OWN), fhir_update_request),
    Endpoint("referral", "GET", "/fhir/Task/{referral_id}", api(hospital=OWN, had=OWN, desk=OWN),
             shared_referral("/fhir/Task/{referral_id}")),
    Endpoint("referral", "GET", "/fhir/Task", api(had=SCOPED, desk=(OK, OK)),
             by_had("/fhir/Task?owner=Organization/{finess}&status=requested")),
    Endpoint("referral", "PUT", "/fhir/Task/{referral_id}", api(had=OWN, admin=(403, 403)), fhir_task_answer),
    audit_trail("referral"),
    *ops("referral"),
    # ---- capacity: establishment data; the ARS keeps the board of its region
    Endpoint("capacity", "PUT", "/v1/hads/{finess}", api(), put_had),
    Endpoint("capacity", "GET", "/v1/hads/{finess}", api(had=SCOPED, desk=SCOPED, ars=SCOPED), by_had("/v1/hads/{finess}")),
    Endpoint("capacity", "POST", "/v1/hads/{finess}/capacity", api(had=SCOPED),
             by_had("/v1/hads/{finess}/capacity",
                    json={"places_available": 30, "admissions_possible_today": 30, "status": "OPEN"})),
    Endpoint("capacity", "GET", "/v1/hads/{finess}/capacity/history", api(had=SCOPED, desk=SCOPED, ars=SCOPED),
             by_had("/v1/hads/{finess}/capacity/history")),
    Endpoint("capacity", "GET", "/v1/departments/{department}/capacity", api(desk=SCOPED, ars=SCOPED),
             by_department("/v1/departments/{department}/capacity")),
    # The FHIR API: the same rules as the REST endpoints above.
    Endpoint("capacity", "GET", "/fhir/metadata", api(hospital=(OK, OK), had=(OK, OK), liaison=(OK, OK), desk=(OK, OK),
                                         ars=(OK, OK)), fixed("/fhir/metadata")),
    Endpoint("capacity", "GET", "/fhir/HealthcareService/{finess}", api(had=SCOPED, desk=SCOPED, ars=SCOPED),
             by_had("/fhir/HealthcareService/{finess}")),
    Endpoint("capacity", "PUT", "/fhir/HealthcareService/{finess}", api(had=SCOPED), fhir_declare),
    Endpoint("capacity", "GET", "/fhir/HealthcareService", api(desk=SCOPED, ars=SCOPED),
             by_department("/fhir/HealthcareService?department={department}")),
    audit_trail("capacity"),
    *ops("capacity"),
    # ---- indicators: the ARS's own; an HAD its HAD-level figures only
    Endpoint("indicators", "GET", "/v1/indicators", api(had=SCOPED, desk=SCOPED, ars=SCOPED),
             indicators_query("/v1/indicators", {"level": "had"}, {"level": "department"}, **{"from": TODAY, "to": TODAY})),
    Endpoint("indicators", "GET", "/v1/indicators/export.xlsx", api(had=SCOPED, desk=SCOPED, ars=SCOPED),
             indicators_query("/v1/indicators/export.xlsx", {}, {"department": OUT}, month=MONTH)),
    Endpoint("indicators", "GET", "/v1/indicators/export.csv", api(had=SCOPED, desk=SCOPED, ars=SCOPED),
             indicators_query("/v1/indicators/export.csv", {"level": "had"}, {"level": "department"}, month=MONTH)),
    Endpoint("indicators", "GET", "/v1/indicators/departments/{department}/daily", api(desk=SCOPED, ars=SCOPED),
             by_department("/v1/indicators/departments/{department}/daily")),
    Endpoint("indicators", "POST", "/v1/indicators/replay", api(), start_replay),
    Endpoint("indicators", "GET", "/v1/indicators/replay", api(), fixed("/v1/indicators/replay")),
    audit_trail("indicators"),
    *ops("indicators"),
    # ---- notify: a recipient's own subscriptions and delivery log; the desks' stream and alerts
    Endpoint("notify", "POST", "/v1/subscriptions", api(hospital=SCOPED, had=SCOPED, desk=SCOPED), subscribe),
    Endpoint("notify", "GET", "/v1/subscriptions", api(hospital=(OK, OK), had=(OK, OK), desk=(OK, OK)),
             fixed("/v1/subscriptions"), check=only_own_items),
    Endpoint("notify", "POST", "/v1/subscriptions/{subscription_id}/rotate", api(hospital=OWN, had=OWN, desk=OWN),
             own_subscription("/v1/subscriptions/{id}/rotate")),
    Endpoint("notify", "POST", "/v1/subscriptions/{subscription_id}/rotate/complete",
             api(hospital=OWN, had=OWN, desk=OWN), own_subscription("/v1/subscriptions/{id}/rotate/complete", rotated=True)),
    Endpoint("notify", "DELETE", "/v1/subscriptions/{subscription_id}", api(hospital=OWN, had=OWN, desk=OWN),
             own_subscription("/v1/subscriptions/{id}")),
    Endpoint("notify", "GET", "/v1/deliveries", api(hospital=(OK, OK), had=(OK, OK), desk=(OK, OK)),
             fixed("/v1/deliveries"), check=only_own_items),
    Endpoint("notify", "POST", "/v1/deliveries/{webhook_id}/retry", api(hospital=OWN, had=OWN, desk=OWN), retry),
    Endpoint("notify", "GET", "/v1/desks/{department}/stream", api(desk=SCOPED, ars=SCOPED),
             by_department("/v1/desks/{department}/stream"), stream=True),
    Endpoint("notify", "GET", "/v1/desks/{department}/alerts", api(desk=SCOPED, ars=SCOPED),
             by_department("/v1/desks/{department}/alerts")),
    audit_trail("notify"),
    *ops("notify"),
    # The desk page (cookie session; its data comes from the APIs above with the desk's own token).
    Endpoint("notify", "GET", "/desk", public(OK, desk_session=303), fixed("/desk")),
    Endpoint("notify", "GET", "/desk/login", public(303), fixed("/desk/login")),
    Endpoint("notify", "GET", "/desk/callback", public(400), fixed("/desk/callback")),
    Endpoint("notify", "GET", "/desk/static/{path}", public(OK), fixed("/desk/static/desk.js")),
    Endpoint("notify", "GET", "/desk/{department}", page(303), by_department("/desk/{department}")),
    Endpoint("notify", "GET", "/desk/{department}/fragments", page(401), by_department("/desk/{department}/fragments")),
    Endpoint("notify", "POST", "/desk/{department}/actions/{action}", page(401), desk_action),
    Endpoint("notify", "GET", "/desk/{department}/referrals/{referral_id}", page(303), desk_referral_page),
    Endpoint("notify", "GET", "/desk/{department}/stream", page(401), by_department("/desk/{department}/stream"),
             stream=True),
    # The HAD's page: its own cookie on /had (no bearer token, nor the desk's session, opens it);
    # an HAD's session on its own and another HAD's page: tests/integration/notify/test_had_page.py.
    Endpoint("notify", "GET", "/had", public(OK), fixed("/had")),
    Endpoint("notify", "GET", "/had/login", public(303), fixed("/had/login")),
    Endpoint("notify", "GET", "/had/callback", public(400), fixed("/had/callback")),
    Endpoint("notify", "GET", "/had/static/{path}", public(OK), fixed("/had/static/had.js")),
    Endpoint("notify", "GET", "/had/{finess}", public(303), by_had("/had/{finess}")),
    Endpoint("notify", "GET", "/had/{finess}/fragments", public(401), by_had("/had/{finess}/fragments")),
    Endpoint("notify", "POST", "/had/{finess}/actions/{action}", public(401),
             by_had("/had/{finess}/actions/accept", data={"referral_id": "x", "offer_id": "y"})),
    Endpoint("notify", "POST", "/had/{finess}/capacity", public(401), by_had("/had/{finess}/capacity", data={
        "places_available": "1", "admissions_possible_today": "1", "status": "OPEN"})),
    Endpoint("notify", "GET", "/had/{finess}/stream", public(401), by_had("/had/{finess}/stream"), stream=True),
    Endpoint("notify", "POST", "/had/logout", public(303), fixed("/had/logout", headers={"Origin": "ORIGIN"})),
    # The liaison nurse's page: its own cookie on /liaison, the same rules; her session on her own and
    # another HAD's page: tests/integration/notify/test_evaluation_pages.py.
    Endpoint("notify", "GET", "/liaison", public(OK), fixed("/liaison")),
    Endpoint("notify", "GET", "/liaison/login", public(303), fixed("/liaison/login")),
    Endpoint("notify", "GET", "/liaison/callback", public(400), fixed("/liaison/callback")),
    Endpoint("notify", "GET", "/liaison/static/{path}", public(OK), fixed("/liaison/static/had.css")),
    Endpoint("notify", "GET", "/liaison/{finess}", public(303), by_had("/liaison/{finess}")),
    Endpoint("notify", "POST", "/liaison/{finess}/avis", public(401),
             by_had("/liaison/{finess}/avis", data={"referral_id": "x", "eligible": "yes"})),
    Endpoint("notify", "POST", "/liaison/logout", public(303), fixed("/liaison/logout", headers={"Origin": "ORIGIN"})),
    # Last: it ends the page session (then, without one, it just goes back to the login form).
    Endpoint("notify", "POST", "/desk/logout", public(303), fixed("/desk/logout", headers={"Origin": "ORIGIN"})),
]


def routes_of(app) -> set[tuple[str, str]]:
    return {(method, path) for path, methods in _walk(app.routes, "") for method in methods if method != "HEAD"}


def _walk(routes, prefix: str):
    """Every (path, methods) an app answers, through included routers (FastAPI keeps them wrapped)."""
    for route in routes:
        if isinstance(route, Route):
            yield prefix + route.path, route.methods or ()
        elif hasattr(route, "original_router"):
            yield from _walk(route.original_router.routes, prefix + route.include_context.prefix)
        elif isinstance(route, Mount) and isinstance(route.app, StaticFiles):  # files under the mount, read only
            yield prefix + route.path + "/{path}", {"GET"}
        elif isinstance(route, Mount):
            yield from _walk(route.routes, prefix + route.path)
        else:  # a kind of route this walk does not know could hide endpoints from the matrix
            raise AssertionError(f"unknown route type {type(route).__name__}")


def _matches(status: int, expected: Any) -> bool:
    wanted = expected[0] if isinstance(expected, tuple) else expected
    return 200 <= status < 300 if wanted == OK else status == wanted


async def _call(w: World, endpoint: Endpoint, caller: str, scope: str) -> tuple[Any, httpx.Response]:
    expected = endpoint.expect[caller][0 if scope == "in" else 1]
    request = await endpoint.build(w, caller, scope, expected == OK)
    url = request.pop("url")
    headers = {**w.headers(caller), **request.pop("headers", {})}
    if headers.get("Origin") == "ORIGIN":
        headers["Origin"] = w.urls["notify"]
    client = w.clients[endpoint.service]
    if endpoint.stream:
        async with client.stream(endpoint.method, url, headers=headers, **request) as response:
            return expected, response  # the status line is the answer; the stream is left at once
    return expected, await client.request(endpoint.method, url, headers=headers, **request)


# ------------------------------------------------------------------ the tests


async def test_every_endpoint_has_a_matrix_entry(apps):
    listed = {(e.service, e.method, e.path) for e in MATRIX}
    assert len(listed) == len(MATRIX), "an endpoint is listed twice"
    served = {(service, method, path) for service, app in apps["apps"].items() for method, path in routes_of(app)}
    assert served - listed == set(), "endpoints without a line in the matrix (add one: who may call them, on what)"
    assert listed - served == set(), "matrix lines for endpoints that do not exist"


async def test_cross_tenant_matrix(world: World):
    failures, counts = [], {"cells": 0, "2xx": 0, "401": 0, "403": 0, "404": 0, "other": 0}
    for endpoint in MATRIX:
        for caller in CALLERS:
            for scope in SCOPES:
                expected, response = await _call(world, endpoint, caller, scope)
                counts["cells"] += 1
                wanted = expected[0] if isinstance(expected, tuple) else expected
                counts[str(wanted) if wanted in (OK, 401, 403, 404) else "other"] += 1
                cell = f"{endpoint.service} {endpoint.method} {endpoint.path} as {caller}, {scope} of scope"
                if not _matches(response.status_code, expected):
                    failures.append(f"{cell}: expected {expected}, got {response.status_code} "
                                    f"{response.text[:200] if not endpoint.stream else ''}")
                    continue
                if isinstance(expected, tuple) and response.json().get("code") != expected[1]:
                    failures.append(f"{cell}: expected code {expected[1]}, got {response.text[:200]}")
                if response.status_code == 404 and endpoint.path.startswith("/v1/"):
                    # As for a resource that does not exist: nothing says it does.
                    code = response.json()["code"]
                    if not code.startswith("UNKNOWN_"):
                        failures.append(f"{cell}: a 404 with code {code}")
                if endpoint.check and 200 <= response.status_code < 300:
                    try:
                        endpoint.check(world, caller, response)
                    except AssertionError as exc:
                        failures.append(f"{cell}: {exc}")
    endpoints = len(MATRIX)
    print(f"\ncross-tenant matrix: {endpoints} endpoints x {len(CALLERS)} callers x {len(SCOPES)} scopes = "
          f"{counts['cells']} cells; expected 2xx {counts['2xx']}, 401 {counts['401']}, 403 {counts['403']}, "
          f"404 {counts['404']}, other (page redirects, bad callback) {counts['other']}")
    assert counts["cells"] == endpoints * len(CALLERS) * len(SCOPES)
    assert not failures, f"{len(failures)} of {counts['cells']} cells wrong:\n" + "\n".join(failures)


# ------------------------------------------------------------------ least visibility, in detail


async def test_an_had_sees_only_what_concerns_itself(world: World):
    referral, capacity = world.clients["referral"], world.clients["capacity"]
    # Two HADs for one commune: X first (more free places for its size), then Y.
    x = await register(capacity, IN, [TWO_HADS_COMMUNE], places=20)
    y = await register(capacity, IN, [TWO_HADS_COMMUNE], places=5)
    as_x, as_y, desk = token("had", finess=x), token("had", finess=y), token("desk", department=IN)
    await world.subscription(f"had:{x}")  # the desk of 34 is subscribed already
    referral_id = await world.post_referral(world.hospital_a, TWO_HADS_COMMUNE)
    offer = (await world.status(referral_id, "OFFERED", had=x))["current_offer"]

    # Its webhook too: the desk's offer.proposed has the whole ranking, the HAD's its own sentence.
    async def offer_webhooks():
        bodies = [json.loads(r.body) for r in world.receiver.received]
        explanations = {b["data"]["explanation"] for b in bodies
                        if b["type"] == "offer.proposed" and b["data"]["referral_id"] == referral_id}
        return explanations if len(explanations) == 2 else None

    explanations = await eventually(offer_webhooks, timeout=30, what="the offer's webhooks to the desk and to X")
    assert any("ensuite" in e and y in e for e in explanations), explanations
    own = [e for e in explanations if "ensuite" not in e]
    assert own == [offer["explanation"].split("; ensuite : ")[0].rstrip(".") + "."] and y not in own[0]

    seen_by_x = (await referral.get(f"/v1/referrals/{referral_id}", headers=as_x)).json()
    assert seen_by_x["tried_hads"] == [x] and seen_by_x["current_offer"]["had_finess"] == x
    assert x in seen_by_x["current_offer"]["explanation"] and y not in str(seen_by_x)
    assert "ensuite" not in seen_by_x["current_offer"]["explanation"], "the next candidates are not X's business"
    desk_view = (await referral.get(f"/v1/referrals/{referral_id}", headers=desk)).json()
    assert "ensuite" in desk_view["current_offer"]["explanation"], "the desk sees the whole ranking"
    # Y was not offered it: the referral does not exist for Y, exactly as an unknown one.
    unknown = await referral.get(f"/v1/referrals/{uuid.uuid4()}", headers=as_y)
    for path in (f"/v1/referrals/{referral_id}", f"/v1/referrals/{referral_id}/timeline"):
        hidden = await referral.get(path, headers=as_y)
        assert (hidden.status_code, hidden.json()["code"]) == (unknown.status_code, unknown.json()["code"]) == (
            404, "UNKNOWN_REFERRAL")

    declined = await referral.post(f"/v1/referrals/{referral_id}/offers/{offer['offer_id']}/decline",
                                   json={"reason": "NO_CAPACITY", "text": "équipe complète ce soir"}, headers=as_x)
    assert declined.status_code == 200, declined.text
    offer_y = (await world.status(referral_id, "OFFERED", had=y))["current_offer"]
    # X declined: gone from its view, timeline included; a late click on its old offer gets the domain's word.
    for path in (f"/v1/referrals/{referral_id}", f"/v1/referrals/{referral_id}/timeline"):
        assert (await referral.get(path, headers=as_x)).status_code == 404
    late = await referral.post(f"/v1/referrals/{referral_id}/offers/{offer['offer_id']}/accept", headers=as_x)
    assert late.status_code == 409 and late.json()["code"] == "OFFER_SUPERSEDED", late.text

    seen_by_y = (await referral.get(f"/v1/referrals/{referral_id}", headers=as_y)).json()
    assert seen_by_y["tried_hads"] == [y] and seen_by_y["current_offer"]["offer_id"] == offer_y["offer_id"]
    assert x not in str(seen_by_y) and "équipe complète" not in str(seen_by_y)
    timeline_y = (await referral.get(f"/v1/referrals/{referral_id}/timeline", headers=as_y)).json()["events"]
    assert [e["type"] for e in timeline_y] == ["ReferralRequested", "OfferMade"]
    assert x not in str(timeline_y) and "explanation_json" not in timeline_y[1]
    timeline_desk = (await referral.get(f"/v1/referrals/{referral_id}/timeline", headers=desk)).json()["events"]
    assert [e["type"] for e in timeline_desk] == ["ReferralRequested", "OfferMade", "OfferDeclined", "OfferMade"]
    assert timeline_desk[2]["text"] == "équipe complète ce soir" and timeline_desk[1]["explanation_json"]

    accepted = await referral.post(f"/v1/referrals/{referral_id}/offers/{offer_y['offer_id']}/accept", headers=as_y)
    assert accepted.status_code == 200 and accepted.json()["tried_hads"] == [y]
    assert (await referral.get(f"/v1/referrals/{referral_id}", headers=as_y)).json()["status"] == "ACCEPTED"
    assert (await referral.get(f"/v1/referrals/{referral_id}", headers=as_x)).status_code == 404


async def test_the_ars_reads_indicators_and_the_board_not_referral_rows(world: World):
    ars = token("ars", region=REGION)
    referral_id = world.shared["referral_in"]
    for path in (f"/v1/referrals/{referral_id}", f"/v1/referrals/{referral_id}/timeline", f"/v1/departments/{IN}/referrals"):
        refused = await world.clients["referral"].get(path, headers=ars)
        assert refused.status_code == 403 and refused.json()["code"] == "ARS_READS_INDICATORS", path
        assert "indicators" in refused.json()["title"]
    board = await world.clients["capacity"].get(f"/v1/departments/{IN}/capacity", headers=ars)
    assert board.status_code == 200 and any(h["finess"] == world.had_a for h in board.json()["hads"])
    figures = await world.clients["indicators"].get("/v1/indicators", headers=ars,
                                                    params={"from": TODAY, "to": TODAY, "department": IN})
    assert figures.status_code == 200 and "rows" in figures.json()
