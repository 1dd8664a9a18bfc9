"""The local realm file (deploy/local/keycloak/reflexe-realm.json) against what the platform and the
simulator need; its behaviour on the real Keycloak is tested in tests/e2e/test_keycloak.py."""

from __future__ import annotations

import json
from pathlib import Path

from reflexe_common.auth import Role
from reflexe_simulator.scenario import build_scenario

REALM = json.loads((Path(__file__).resolve().parents[3] / "deploy/local/keycloak/reflexe-realm.json").read_text())
CLIENTS = {c["clientId"]: c for c in REALM["clients"]}
USERS = {u["username"]: u for u in REALM["users"]}


def test_every_platform_role_is_a_realm_role():
    names = {r["name"] for r in REALM["roles"]["realm"]}
    assert {r.value for r in Role} <= names
    assert "liaison" in names


def test_every_simulated_hospital_and_had_has_a_client_credentials_client_with_its_finess():
    # The simulator's default scenario (./reflexe up: departments 34 and 31, seed 1).
    scenario = build_scenario(["34", "31"], 1)
    expected = [("hospital", s.finess) for d in scenario.departments.values() for s in d.hospitals]
    expected += [("had", h.finess) for d in scenario.departments.values() for h in d.hads]
    for role, finess in expected:
        client = CLIENTS[f"system-{role}-{finess}"]
        assert client["serviceAccountsEnabled"] and not client["publicClient"]
        assert not client["standardFlowEnabled"] and not client["directAccessGrantsEnabled"]
        account = USERS[f"service-account-system-{role}-{finess}"]
        assert account["serviceAccountClientId"] == client["clientId"]
        assert account["realmRoles"] == [role] and account["attributes"] == {"finess": [finess]}
    for d in scenario.departments.values():
        for h in d.hads:
            assert USERS[f"had{h.finess}"]["attributes"] == {"finess": [h.finess]}


def test_every_simulated_had_has_a_demo_liaison_nurse_in_the_department_it_serves():
    # The simulator's liaison nurses log in as these users (reflexe_common.local_idp.person_username).
    scenario = build_scenario(["34", "31"], 1)
    for d in scenario.departments.values():
        for h in d.hads:
            nurse = USERS[f"liaison{h.finess}"]
            assert nurse["realmRoles"] == ["liaison"]
            assert nurse["attributes"] == {"finess": [h.finess], "department": [h.department]}
            # The demo scheme: the password is the user name.
            assert nurse["credentials"] == [{"type": "password", "value": f"liaison{h.finess}", "temporary": False}]


def test_demo_people_carry_their_role_and_scope():
    assert (USERS["desk34"]["realmRoles"], USERS["desk34"]["attributes"]) == (["desk"], {"department": ["34"]})
    assert (USERS["desk31"]["realmRoles"], USERS["desk31"]["attributes"]) == (["desk"], {"department": ["31"]})
    assert (USERS["ars76"]["realmRoles"], USERS["ars76"]["attributes"]) == (["ars"], {"region": ["76"]})
    assert USERS["admin-reflexe"]["realmRoles"] == ["admin"]


def test_tokens_carry_audience_roles_and_scope_claims_through_default_scopes():
    scopes = {s["name"]: s for s in REALM["clientScopes"]}
    # Declaring clientScopes replaces Keycloak's built-in ones: `basic` (sub) and `roles` must be here.
    assert {"basic", "roles", "reflexe-scope"} <= set(REALM["defaultDefaultClientScopes"])
    mappers = {m["name"]: m for m in scopes["reflexe-scope"]["protocolMappers"]}
    assert mappers["audience reflexe"]["config"]["included.custom.audience"] == "reflexe"
    for claim in ("finess", "department", "region"):
        assert mappers[claim]["config"]["user.attribute"] == claim
        assert mappers[claim]["config"]["access.token.claim"] == "true"
    for client in REALM["clients"]:
        assert {"basic", "roles", "reflexe-scope"} <= set(client["defaultClientScopes"]), client["clientId"]


def test_scope_attributes_are_declared_and_only_administrators_edit_them():
    [profile_component] = REALM["components"]["org.keycloak.userprofile.UserProfileProvider"]
    profile = json.loads(profile_component["config"]["kc.user.profile.config"][0])
    attributes = {a["name"]: a for a in profile["attributes"]}
    for name in ("finess", "department", "region"):
        assert attributes[name]["permissions"]["edit"] == ["admin"]


def test_web_client_is_public_with_pkce_and_loopback_redirects_only():
    web = CLIENTS["reflexe-web"]
    assert web["publicClient"] and web["standardFlowEnabled"]
    assert not web["directAccessGrantsEnabled"] and not web.get("implicitFlowEnabled")
    assert web["attributes"]["pkce.code.challenge.method"] == "S256"
    # Keycloak lets a loopback redirect URI registered without a port match any port (RFC 8252).
    assert web["redirectUris"] == ["http://127.0.0.1/*", "http://localhost/*"]
    cli = CLIENTS["reflexe-cli"]
    assert cli["directAccessGrantsEnabled"] and not cli["publicClient"] and not cli["standardFlowEnabled"]


def test_access_tokens_last_fifteen_minutes():
    assert REALM["accessTokenLifespan"] == 15 * 60
