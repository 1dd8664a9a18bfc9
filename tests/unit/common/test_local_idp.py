"""The local Keycloak client's input checks (its calls are tested on the real server in
tests/e2e/test_keycloak.py)."""

from __future__ import annotations

import pytest

from reflexe_common.local_idp import LocalIdentityProvider, LocalIdpError, person_username, split_issuer


def test_the_server_and_realm_come_from_the_issuer():
    assert split_issuer("http://127.0.0.1:18080/realms/reflexe") == ("http://127.0.0.1:18080", "reflexe")
    assert split_issuer("http://127.0.0.1:18080/realms/reflexe/") == ("http://127.0.0.1:18080", "reflexe")
    for not_an_issuer in ("http://127.0.0.1:18080", "http://127.0.0.1:18080/realms/", "/realms/reflexe"):
        with pytest.raises(ValueError):
            split_issuer(not_an_issuer)


def test_from_env_needs_the_issuer_and_reads_the_admin_credentials():
    with pytest.raises(LocalIdpError, match="OIDC_ISSUER"):
        LocalIdentityProvider.from_env({})
    idp = LocalIdentityProvider.from_env({"OIDC_ISSUER": "http://127.0.0.1:18180/realms/reflexe",
                                          "KEYCLOAK_ADMIN_USER": "root", "KEYCLOAK_ADMIN_PASSWORD": "s3cret"})
    assert (idp.base_url, idp.realm, idp.issuer) == ("http://127.0.0.1:18180", "reflexe",
                                                     "http://127.0.0.1:18180/realms/reflexe")
    assert (idp._admin_user, idp._admin_password) == ("root", "s3cret")


@pytest.mark.parametrize("role, scope, message", [
    ("hospital", {}, "needs a FINESS"),
    ("hospital", {"finess": "34-123"}, "invalid finess"),
    ("had", {"finess": "340780478"}, "invalid finess"),  # its check key is wrong
    ("desk", {"department": "345"}, "invalid department"),
    ("ars", {"region": "Occitanie"}, "invalid region"),
    ("liaison", {"finess": "349000018"}, "needs her HAD's FINESS and the department"),
    ("liaison", {"department": "34"}, "needs her HAD's FINESS and the department"),
])
async def test_a_bad_scope_is_refused_before_any_call(role, scope, message):
    # Port 9 (discard): nothing answers there, so reaching the server would fail differently.
    async with LocalIdentityProvider("http://127.0.0.1:9") as idp:
        with pytest.raises(ValueError, match=message):
            await idp.issue(role, **scope)


def test_demo_people_are_named_by_their_role_and_scope_a_liaison_nurse_by_her_had():
    assert person_username("desk", {"department": "34"}) == "desk34"
    assert person_username("ars", {"region": "76"}) == "ars76"
    assert person_username("admin", {}) == "admin-reflexe"
    # The department she works in is an attribute: the realm's demo user liaison349000018 is the one.
    assert person_username("liaison", {"finess": "349000018", "department": "34"}) == "liaison349000018"
