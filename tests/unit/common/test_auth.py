"""Token verification: only the configured issuer's asymmetric signatures, with every claim checked."""

from __future__ import annotations

import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from reflexe_common.auth import AuthSettings, Role, TokenVerifier
from reflexe_common.errors import ApiError
from reflexe_common.settings import ServiceSettings
from tests.support.issuer import SuiteIssuer, suite_issuer


def _verifier(issuer: SuiteIssuer, **overrides) -> TokenVerifier:
    return TokenVerifier(AuthSettings(issuer=issuer.url, **overrides))


async def _refused(verifier: TokenVerifier, token: str, status: int = 401) -> ApiError:
    with pytest.raises(ApiError) as refused:
        await verifier.verify(token)
    assert refused.value.status == status, refused.value.message
    return refused.value


async def test_tokens_of_the_issuer_give_the_role_and_only_the_scope_of_that_role() -> None:
    issuer = suite_issuer()
    verifier = _verifier(issuer)
    desk = await verifier.verify(issuer.token("desk", department="34", finess="340780477"))
    assert (desk.role, desk.department, desk.finess) == (Role.DESK, "34", None)
    had = await verifier.verify(issuer.sign(issuer.claims("had", finess="340780477"), algorithm="ES256"))
    assert (had.role, had.finess) == (Role.HAD, "340780477")


async def test_wrong_issuer_audience_expiry_not_before_and_lifetime_are_refused() -> None:
    issuer = suite_issuer()
    verifier = _verifier(issuer, max_lifetime_seconds=900)
    now = int(time.time())
    base = issuer.claims("hospital", finess="340780477", ttl_seconds=600)
    cases = {
        "issuer": {**base, "iss": "http://127.0.0.1:1/realms/other"},
        "audience": {**base, "aud": "another-application"},
        "expired": {**base, "iat": now - 1200, "nbf": now - 1200, "exp": now - 600},
        "not yet valid": {**base, "nbf": now + 600},
        "lifetime": {**base, "exp": now + 3600},
    }
    for what, claims in cases.items():
        error = await _refused(verifier, issuer.sign(claims))
        assert error.code == "INVALID_TOKEN", what
    for missing in ("exp", "iat", "sub", "aud"):
        await _refused(verifier, issuer.sign({k: v for k, v in base.items() if k != missing}))


async def test_symmetric_unsigned_and_foreign_key_tokens_are_refused() -> None:
    issuer = suite_issuer()
    verifier = _verifier(issuer)
    claims = issuer.claims("admin")
    await _refused(verifier, jwt.encode(claims, "a-shared-secret-of-enough-length-0123456789", algorithm="HS256",
                                        headers={"kid": issuer.rsa_kid}))
    await _refused(verifier, jwt.encode(claims, None, algorithm="none"))
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    await _refused(verifier, jwt.encode(claims, stranger, algorithm="RS256", headers={"kid": issuer.rsa_kid}))
    # An ES256 key named in an RS256 header: the algorithm must be the key's own.
    await _refused(verifier, issuer.sign(claims, algorithm="RS256", kid=issuer.ec_kid))
    await _refused(verifier, "not.a.token")


async def test_role_and_scope_come_from_the_configured_claims() -> None:
    issuer = suite_issuer()
    verifier = _verifier(issuer)
    no_role = {**issuer.claims("desk", department="34"), "realm_access": {"roles": ["offline_access"]}}
    assert (await _refused(verifier, issuer.sign(no_role), 403)).code == "NO_PLATFORM_ROLE"
    two_roles = {**issuer.claims("desk", department="34"), "realm_access": {"roles": ["desk", "admin"]}}
    assert (await _refused(verifier, issuer.sign(two_roles), 403)).code == "AMBIGUOUS_ROLE"
    assert (await _refused(verifier, issuer.token("hospital"), 403)).code == "MISSING_SCOPE"
    custom = _verifier(issuer, role_claim="reflexe_role", finess_claim="etab")
    claims = {**issuer.claims("had"), "reflexe_role": "had", "etab": "310781406"}
    principal = await custom.verify(issuer.sign(claims))
    assert (principal.role, principal.finess) == (Role.HAD, "310781406")


async def test_an_unknown_key_id_fetches_the_keys_again_once() -> None:
    issuer = SuiteIssuer()
    verifier = TokenVerifier(AuthSettings(issuer=issuer.url))
    await verifier.verify(issuer.token("ars", region="76"))
    fetched = issuer.jwks_fetches
    rotated = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    issuer.extra_keys.append({**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(rotated.public_key())), "kid": "rotated",
                              "alg": "RS256", "use": "sig"})
    verifier.jwks._min_refresh = 0  # the rotation happens right after the first fetch
    token = jwt.encode(issuer.claims("ars", region="76"), rotated, algorithm="RS256", headers={"kid": "rotated"})
    assert (await verifier.verify(token)).region == "76"
    assert issuer.jwks_fetches == fetched + 1
    await verifier.verify(token)
    assert issuer.jwks_fetches == fetched + 1, "a known key is served from the cache"


async def test_garbage_key_ids_do_not_hammer_the_issuer() -> None:
    issuer = SuiteIssuer()
    verifier = TokenVerifier(AuthSettings(issuer=issuer.url))
    await verifier.verify(issuer.token("ars", region="76"))
    fetched = issuer.jwks_fetches
    for n in range(20):
        await _refused(verifier, issuer.sign(issuer.claims("ars", region="76"), kid=f"unknown-{n}"))
    assert issuer.jwks_fetches == fetched


def test_a_service_refuses_to_start_without_an_issuer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OIDC_ISSUER", raising=False)
    with pytest.raises(ValueError, match="OIDC_ISSUER"):
        ServiceSettings()


async def test_a_liaison_nurse_is_scoped_to_her_had_and_the_departments_it_serves() -> None:
    issuer = suite_issuer()
    verifier = _verifier(issuer)
    one = await verifier.verify(issuer.token("liaison", finess="340780477", department="34", region="76"))
    assert (one.role, one.finess, one.departments, one.region) == (Role.LIAISON, "340780477", ("34",), None)
    assert one.actor == "liaison:340780477"
    # A multi-valued attribute: an HAD serving two departments.
    two = await verifier.verify(issuer.sign(issuer.claims("liaison", finess="340780477", department=["34", "30", "34"])))
    assert two.departments == ("34", "30")
    assert (await _refused(verifier, issuer.token("liaison", finess="340780477"), 403)).code == "MISSING_SCOPE"
    assert (await _refused(verifier, issuer.token("liaison", department="34"), 403)).code == "MISSING_SCOPE"
    # Departments are the liaison's only: an HAD or a desk token never carries a list.
    had = await verifier.verify(issuer.token("had", finess="340780477", department="34"))
    assert had.departments == ()
