"""The real local Keycloak (deploy/local/keycloak.sh, realm deploy/local/keycloak/reflexe-realm.json)
issues the tokens the platform expects: the role in realm_access.roles, the scope claim, the
`reflexe` audience, RS256 signatures published in its JWKS; and a service accepts them."""

from __future__ import annotations

import httpx
import jwt
import pytest

from reflexe_common.auth import AuthSettings, Role, TokenVerifier
from reflexe_referral.entrypoints.app import build_app as build_referral
from reflexe_referral.settings import ReferralSettings
from tests.support.data import referral_body, unique_finess
from tests.support.keycloak import Keycloak
from tests.support.services import serve_in_process

# The first start on a machine downloads and builds Keycloak inside the first test's setup.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]


async def verified_claims(keycloak: Keycloak, token: str) -> dict:
    """The token's claims once its signature is checked against the realm's JWKS."""
    async with httpx.AsyncClient() as http:
        discovery = (await http.get(f"{keycloak.issuer}/.well-known/openid-configuration")).json()
        key_set = jwt.PyJWKSet.from_dict((await http.get(discovery["jwks_uri"])).json())
    kid = jwt.get_unverified_header(token)["kid"]
    key = next(k for k in key_set.keys if k.key_id == kid)
    return jwt.decode(token, key.key, algorithms=["RS256"], audience="reflexe", issuer=keycloak.issuer)


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
