"""The gateway's own access token from the real Keycloak of the demo realm (client
reflexe-gateway): fetched through GATEWAY_OIDC_DISCOVERY_URL when the issuer's address is not
reachable from where the gateway runs (as in compose, where tokens name localhost:18080 while
the gateway reaches keycloak:8080), and taken by the services as the `gateway` role."""

from __future__ import annotations

import httpx
import pytest

from reflexe_common.auth import AuthSettings, Role, TokenVerifier
from reflexe_gateway.adapters.referral_client import ClientCredentials
from tests.support.keycloak import Keycloak

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]
DEMO_REALM_SECRET = "local-reflexe-gateway"  # deploy/local/keycloak/reflexe-realm.json, demo only


async def test_the_gateway_gets_its_token_through_the_discovery_url_and_a_service_takes_it(keycloak: Keycloak):
    unreachable_issuer = "http://127.0.0.1:9/realms/" + keycloak.realm  # port 9 (discard): nothing answers
    tokens = ClientCredentials(unreachable_issuer, "reflexe-gateway", DEMO_REALM_SECRET,
                               discovery_url=f"{keycloak.issuer}/.well-known/openid-configuration")
    token = await tokens()
    assert await tokens() == token, "a valid token is reused, not fetched again"
    principal = await TokenVerifier(AuthSettings(issuer=keycloak.issuer)).verify(token)
    assert principal.role == Role.GATEWAY

    without = ClientCredentials(unreachable_issuer, "reflexe-gateway", DEMO_REALM_SECRET)
    with pytest.raises(httpx.ConnectError):
        await without()  # the issuer's own address is where it would have looked
