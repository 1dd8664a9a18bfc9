"""The real local Keycloak (deploy/local/keycloak.sh, realm deploy/local/keycloak/reflexe-realm.json)
issues the tokens the platform expects: the role in realm_access.roles, the scope claim, the
`reflexe` audience, RS256 signatures published in its JWKS; and a service accepts them."""

from __future__ import annotations

import base64
import hashlib
import html
import re
import secrets
from urllib.parse import parse_qsl, urlsplit

import httpx
import jwt
import pytest

from reflexe_common.auth import AuthSettings, Role, TokenVerifier
from reflexe_referral.entrypoints.app import build_app as build_referral
from reflexe_referral.settings import ReferralSettings
from tests.support.data import referral_body, unique_finess
from tests.support.keycloak import Keycloak
from tests.support.services import serve_in_process
from tests.support.territory import own_department

# The first start on a machine downloads and builds Keycloak inside the first test's setup.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]
DESK_DEPARTMENT = own_department()  # the department of the desk nurse this module creates


async def verified_claims(keycloak: Keycloak, token: str, audience: str = "reflexe") -> dict:
    """The token's claims once its signature is checked against the realm's JWKS."""
    async with httpx.AsyncClient() as http:
        discovery = (await http.get(f"{keycloak.issuer}/.well-known/openid-configuration")).json()
        key_set = jwt.PyJWKSet.from_dict((await http.get(discovery["jwks_uri"])).json())
    kid = jwt.get_unverified_header(token)["kid"]
    key = next(k for k in key_set.keys if k.key_id == kid)
    return jwt.decode(token, key.key, algorithms=["RS256"], audience=audience, issuer=keycloak.issuer)


async def test_client_credentials_token_of_a_new_hospital_carries_role_finess_and_audience(keycloak: Keycloak):
    finess = unique_finess()
    async with keycloak.client() as idp:
        client_id, secret = await idp.ensure_system_client("hospital", finess)
        again = await idp.ensure_system_client("hospital", finess)
        token = await idp.client_credentials_token(client_id, secret)
    assert client_id == f"system-hospital-{finess}" and again == (client_id, secret)
    claims = await verified_claims(keycloak, token)
    assert "hospital" in claims["realm_access"]["roles"]
    assert claims["finess"] == finess
    assert "reflexe" in ([claims["aud"]] if isinstance(claims["aud"], str) else claims["aud"])
    assert claims["exp"] - claims["iat"] == 15 * 60
    # What every service makes of it.
    principal = await TokenVerifier(AuthSettings(issuer=keycloak.issuer)).verify(token)
    assert (principal.role, principal.finess) == (Role.HOSPITAL, finess)


async def test_password_token_of_the_demo_desk34_has_department_34(keycloak: Keycloak):
    async with keycloak.client() as idp:
        token = await idp.password_token("desk34", "desk34")
    claims = await verified_claims(keycloak, token)
    assert claims["department"] == "34"
    assert claims["realm_access"]["roles"] == ["desk"]
    principal = await TokenVerifier(AuthSettings(issuer=keycloak.issuer)).verify(token)
    assert (principal.role, principal.department) == (Role.DESK, "34")


async def test_the_demo_liaison_nurse_of_an_had_is_a_liaison_of_its_finess_in_its_department(keycloak: Keycloak):
    async with keycloak.client() as idp:
        demo = await idp.password_token("liaison349000018", "liaison349000018")
        # The simulator's liaison nurses: the same user, or one made on demand for another HAD.
        again = await idp.token_for("liaison", finess="349000018", department="34")
        made = await idp.token_for("liaison", finess="319000014", department="31")
    claims = await verified_claims(keycloak, demo)
    assert (claims["realm_access"]["roles"], claims["finess"], claims["department"]) == (["liaison"], "349000018", "34")
    assert claims["preferred_username"] == "liaison349000018"
    verifier = TokenVerifier(AuthSettings(issuer=keycloak.issuer))
    for token, finess, department in ((demo, "349000018", "34"), (again, "349000018", "34"), (made, "319000014", "31")):
        principal = await verifier.verify(token)
        assert (principal.role, principal.finess, principal.departments) == (Role.LIAISON, finess, (department,))


async def test_users_made_on_demand_carry_their_scope(keycloak: Keycloak):
    async with keycloak.client() as idp:
        ars = await idp.token_for("ars", region="84")
        had = await idp.token_for("had", finess=unique_finess("31"))
        with pytest.raises(ValueError, match="no realm role"):
            await idp.token_for("nurse", department="34")
    verifier = TokenVerifier(AuthSettings(issuer=keycloak.issuer))
    assert (await verifier.verify(ars)).region == "84"
    assert (await verifier.verify(had)).role == Role.HAD


async def test_discovery_names_the_issuer_and_jwks_has_an_rs256_signing_key(keycloak: Keycloak):
    async with httpx.AsyncClient() as http:
        discovery = (await http.get(f"{keycloak.issuer}/.well-known/openid-configuration")).json()
        jwks = (await http.get(discovery["jwks_uri"])).json()
    assert discovery["issuer"] == keycloak.issuer
    assert "S256" in discovery["code_challenge_methods_supported"]
    assert any(k["kty"] == "RSA" and k["alg"] == "RS256" and k.get("use") == "sig" for k in jwks["keys"])


async def test_the_web_client_requires_pkce_and_loopback_redirects(keycloak: Keycloak):
    authorize = f"{keycloak.issuer}/protocol/openid-connect/auth"
    common = {"client_id": "reflexe-web", "response_type": "code", "scope": "openid"}
    pkce = {"code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM", "code_challenge_method": "S256"}
    async with httpx.AsyncClient() as http:
        login_page = await http.get(authorize, params={**common, **pkce,
                                                      "redirect_uri": "http://127.0.0.1:8004/desk/callback"})
        without_pkce = await http.get(authorize, params={**common, "redirect_uri": "http://127.0.0.1:8004/desk/callback"})
        elsewhere = await http.get(authorize, params={**common, **pkce, "redirect_uri": "http://127.0.0.1.example.org/cb"})
    assert login_page.status_code == 200 and "kc-form-login" in login_page.text
    assert without_pkce.status_code == 302 and "code_challenge" in without_pkce.headers["location"]
    assert elsewhere.status_code == 400


async def test_the_referral_service_accepts_a_hospital_token_and_refuses_another_realms(keycloak: Keycloak, topics):
    finess = unique_finess()
    settings = ReferralSettings(KAFKA_BOOTSTRAP=topics.kafka_bootstrap, DATABASE_URL=topics.database_url,
                                OIDC_ISSUER=keycloak.issuer, LOG_LEVEL="WARNING")
    async with keycloak.client() as idp:
        hospital = await idp.token_for("hospital", finess=finess)
        async with httpx.AsyncClient() as http:
            # The master realm's administrator: another issuer, another audience.
            master = (await http.post(f"{keycloak.base_url}/realms/master/protocol/openid-connect/token",
                                      data={"grant_type": "password", "client_id": "admin-cli",
                                            "username": keycloak.admin_user,
                                            "password": keycloak.admin_password})).json()["access_token"]
    async with serve_in_process(build_referral(settings)) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
        accepted = await client.post("/v1/referrals", json=referral_body(finess),
                                     headers={"Authorization": f"Bearer {hospital}"})
        refused = await client.post("/v1/referrals", json=referral_body(finess),
                                    headers={"Authorization": f"Bearer {master}"})
    assert accepted.status_code == 201, accepted.text
    assert accepted.json()["status"] == "REQUESTED"
    assert refused.status_code == 401 and refused.json()["code"] == "INVALID_TOKEN"


def browser_cookies(http: httpx.AsyncClient) -> dict[str, str]:
    """Keycloak's cookies are Secure; a browser sends them to http://127.0.0.1 (a secure context),
    httpx does not: send them as a browser would."""
    return {"Cookie": "; ".join(f"{c.name}={c.value}" for c in http.cookies.jar)}


async def test_a_desk_nurse_logs_in_through_the_web_client_with_pkce(keycloak: Keycloak):
    """The authorization code flow the desk page runs: Keycloak's login form, the code for a PKCE
    verifier, tokens carrying the desk's department, an ID token for the web client, and logout
    back to a local page. The nurse is this test's own, made in the realm with a random password."""
    username, password = f"desk-{secrets.token_hex(6)}", secrets.token_urlsafe(12)
    async with keycloak.client() as idp:
        await idp.ensure_user(username, "desk", password, department=DESK_DEPARTMENT)
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    redirect_uri, nonce = "http://127.0.0.1:8004/desk/callback", secrets.token_urlsafe(16)
    endpoints = f"{keycloak.issuer}/protocol/openid-connect"
    async with httpx.AsyncClient(timeout=30) as http:
        login_page = await http.get(f"{endpoints}/auth", params={
            "client_id": "reflexe-web", "response_type": "code", "scope": "openid", "redirect_uri": redirect_uri,
            "state": "s1", "nonce": nonce, "code_challenge": challenge, "code_challenge_method": "S256"})
        action = html.unescape(re.search(r'<form[^>]*id="kc-form-login"[^>]*action="([^"]+)"', login_page.text)[1])
        logged_in = await http.post(action, data={"username": username, "password": password},
                                    headers=browser_cookies(http))
        assert logged_in.status_code == 302, logged_in.text[:500]
        callback = urlsplit(logged_in.headers["location"])
        query = dict(parse_qsl(callback.query))
        assert f"{callback.scheme}://{callback.netloc}{callback.path}" == redirect_uri and query["state"] == "s1"
        form = {"grant_type": "authorization_code", "client_id": "reflexe-web", "code": query["code"],
                "redirect_uri": redirect_uri}
        without_verifier = await http.post(f"{endpoints}/token", data=form)
        # A code is single-use: the refused exchange above spent it, so log in again for a new one.
        assert without_verifier.status_code == 400
        again = await http.get(f"{endpoints}/auth", params={
            "client_id": "reflexe-web", "response_type": "code", "scope": "openid", "redirect_uri": redirect_uri,
            "state": "s2", "nonce": nonce, "code_challenge": challenge, "code_challenge_method": "S256"},
            headers=browser_cookies(http))
        # The browser's SSO session answers at once with a new code.
        code = dict(parse_qsl(urlsplit(again.headers["location"]).query))["code"]
        tokens = (await http.post(f"{endpoints}/token", data={**form, "code": code, "code_verifier": verifier})).json()
        logout = await http.get(f"{endpoints}/logout", params={
            "client_id": "reflexe-web", "id_token_hint": tokens["id_token"],
            "post_logout_redirect_uri": "http://127.0.0.1:8004/desk"}, headers=browser_cookies(http))
    principal = await TokenVerifier(AuthSettings(issuer=keycloak.issuer)).verify(tokens["access_token"])
    assert (principal.role, principal.department) == (Role.DESK, DESK_DEPARTMENT)
    id_claims = await verified_claims(keycloak, tokens["id_token"], audience="reflexe-web")
    assert id_claims["nonce"] == nonce and id_claims["sub"] == principal.subject
    assert logout.status_code == 302 and logout.headers["location"].startswith("http://127.0.0.1:8004/desk")
