"""Bearer-token authentication (OpenID Connect access tokens) and caller scoping for every endpoint.

People log in at the identity provider (Keycloak locally, the region's provider in production);
hospital and HAD systems obtain tokens with their client credentials. A service trusts one issuer:
it verifies the token's asymmetric signature (RS256 or ES256) against the issuer's published keys
(JWKS, cached, fetched again when a token names an unknown key), then `iss`, `aud`, `exp`, `nbf`
and a maximum lifetime. There is no shared secret and no default issuer: a service without
OIDC_ISSUER refuses to start.

The caller's role and scope come from claims whose names are settings (see AuthSettings): a
hospital or an HAD by its FINESS, a desk by its department, the ARS by its region. Endpoints ask
for roles with `require(...)` and then check the scope against the resource (a desk of 34 sees
only department 34).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import httpx
import jwt
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from reflexe_common.errors import ApiError
from reflexe_common.geography import Geography

log = logging.getLogger(__name__)

# Asymmetric only: an HS256 token would let whoever holds the verification key mint tokens.
ALGORITHMS = ("RS256", "ES256")


class Role(StrEnum):
    HOSPITAL = "hospital"
    HAD = "had"
    DESK = "desk"
    ARS = "ars"
    ADMIN = "admin"
    # The HL7 gateway's system client: reports hospitals' and HADs' patient movements (no scope:
    # it speaks for the senders its own allow-list admits; only POST /v1/patient-events takes it).
    GATEWAY = "gateway"
    # An HAD's liaison nurse (IDE de liaison): gives the avis HAD at the bedside for her HAD
    # (`finess`), in the departments it serves (`department`: one code or a list of codes).
    LIAISON = "liaison"


# The scope claim each role must carry.
SCOPE_OF_ROLE = {Role.HOSPITAL: "finess", Role.HAD: "finess", Role.DESK: "department", Role.ARS: "region",
                 Role.ADMIN: None, Role.GATEWAY: None, Role.LIAISON: "finess"}


@dataclass(frozen=True)
class Principal:
    role: Role
    subject: str
    finess: str | None = None
    department: str | None = None
    region: str | None = None
    departments: tuple[str, ...] = ()  # a liaison nurse's: those her HAD serves

    @property
    def actor(self) -> str:
        """How events and audit records name the caller's organisation (no personal data)."""
        scope = self.finess or self.department or self.region or self.subject
        return f"{self.role}:{scope}"


@dataclass(frozen=True)
class AuthSettings:
    """What a service needs to verify tokens; built from the service's settings."""

    issuer: str
    audience: str = "reflexe"
    jwks_url: str | None = None  # None: taken from the issuer's discovery document
    max_lifetime_seconds: int = 3600
    leeway_seconds: int = 30
    role_claim: str = "realm_access.roles"
    finess_claim: str = "finess"
    department_claim: str = "department"
    region_claim: str = "region"

    @classmethod
    def of(cls, settings: Any) -> AuthSettings:
        return cls(issuer=settings.oidc_issuer, audience=settings.oidc_audience, jwks_url=settings.oidc_jwks_url or None,
                   max_lifetime_seconds=settings.oidc_max_token_lifetime_seconds,
                   role_claim=settings.auth_role_claim, finess_claim=settings.auth_finess_claim,
                   department_claim=settings.auth_department_claim, region_claim=settings.auth_region_claim)


def _invalid(message: str) -> ApiError:
    return ApiError(401, "INVALID_TOKEN", f"invalid bearer token: {message}")


class JwksCache:
    """The issuer's signing keys by key id. An unknown `kid` triggers one refetch (the issuer may
    have rotated its keys), at most once per `min_refresh_seconds` so that garbage tokens cannot
    make the service hammer the issuer."""

    def __init__(self, settings: AuthSettings, min_refresh_seconds: float = 10.0) -> None:
        self._settings = settings
        self._min_refresh = min_refresh_seconds
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = float("-inf")
        self._jwks_url = settings.jwks_url
        self._lock = asyncio.Lock()

    async def key(self, kid: str) -> jwt.PyJWK:
        if kid not in self._keys:
            async with self._lock:
                if kid not in self._keys and time.monotonic() - self._fetched_at >= self._min_refresh:
                    await self._refresh()
        try:
            return self._keys[kid]
        except KeyError:
            raise _invalid(f"unknown signing key {kid!r}") from None

    async def _refresh(self) -> None:
        self._fetched_at = time.monotonic()
        try:
            async with httpx.AsyncClient(timeout=5.0) as client:
                if self._jwks_url is None:
                    self._jwks_url = await self._discover(client)
                response = await client.get(self._jwks_url)
                response.raise_for_status()
                key_set = jwt.PyJWKSet.from_dict(response.json())
        except (httpx.HTTPError, ValueError, jwt.PyJWKSetError) as exc:
            log.warning("could not fetch the issuer's keys", extra={"error": repr(exc)})
            raise ApiError(503, "ISSUER_UNAVAILABLE", "the identity provider's keys cannot be fetched; try again") from exc
        self._keys = {k.key_id: k for k in key_set.keys if k.key_id and k.algorithm_name in ALGORITHMS}

    async def _discover(self, client: httpx.AsyncClient) -> str:
        response = await client.get(self._settings.issuer.rstrip("/") + "/.well-known/openid-configuration")
        response.raise_for_status()
        document = response.json()
        if document.get("issuer") != self._settings.issuer:
            raise ValueError(f"discovery document names issuer {document.get('issuer')!r}")
        return document["jwks_uri"]


def _claim(claims: dict[str, Any], path: str) -> Any:
    """A claim by dotted path (Keycloak puts realm roles in realm_access.roles)."""
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


class TokenVerifier:
    def __init__(self, settings: AuthSettings, jwks: JwksCache | None = None) -> None:
        self.settings = settings
        self.jwks = jwks or JwksCache(settings)

    async def verify(self, token: str) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as exc:
            raise _invalid(str(exc)) from exc
        algorithm = header.get("alg")
        if algorithm not in ALGORITHMS:
            raise _invalid(f"algorithm {algorithm!r} is not accepted (only {', '.join(ALGORITHMS)})")
        key = await self.jwks.key(str(header.get("kid")))
        if key.algorithm_name != algorithm:
            raise _invalid("the token's algorithm does not match its key")
        s = self.settings
        try:
            claims = jwt.decode(token, key.key, algorithms=[algorithm], audience=s.audience, issuer=s.issuer,
                                leeway=s.leeway_seconds, options={"require": ["exp", "iat", "iss", "aud", "sub"]})
        except jwt.InvalidTokenError as exc:
            raise _invalid(str(exc)) from exc
        if claims["exp"] - claims["iat"] > s.max_lifetime_seconds:
            raise _invalid(f"lifetime above {s.max_lifetime_seconds} s")
        return self._principal(claims)

    def _principal(self, claims: dict[str, Any]) -> Principal:
        s = self.settings
        granted = _claim(claims, s.role_claim)
        granted = [granted] if isinstance(granted, str) else granted if isinstance(granted, list) else []
        roles = {Role(r) for r in granted if r in _ROLE_NAMES}
        if len(roles) != 1:
            raise ApiError(403, "NO_PLATFORM_ROLE" if not roles else "AMBIGUOUS_ROLE",
                           f"the token must grant exactly one platform role, found {sorted(roles) or 'none'}")
        role = roles.pop()
        scope = {name: _claim(claims, path) for name, path in
                 (("finess", s.finess_claim), ("department", s.department_claim), ("region", s.region_claim))}
        scope = {k: v for k, v in scope.items() if isinstance(v, str) and v}
        needed = SCOPE_OF_ROLE[role]
        if needed and needed not in scope:
            raise ApiError(403, "MISSING_SCOPE", f"a {role} token must carry its {needed}")
        if role == Role.LIAISON:
            return Principal(role=role, subject=str(claims["sub"]), finess=scope["finess"],
                             departments=_departments(_claim(claims, s.department_claim)))
        # Only the scope the role is about: a stray claim never widens what a caller may see.
        return Principal(role=role, subject=str(claims["sub"]), **({needed: scope[needed]} if needed else {}))


def _departments(value: Any) -> tuple[str, ...]:
    """A liaison nurse's departments: one code, or a list (a multi-valued attribute)."""
    values = [value] if isinstance(value, str) else value if isinstance(value, list) else []
    departments = tuple(dict.fromkeys(v for v in values if isinstance(v, str) and v))
    if not departments:
        raise ApiError(403, "MISSING_SCOPE", "a liaison token must carry the departments its HAD serves (department)")
    return departments


_ROLE_NAMES = frozenset(r.value for r in Role)
_bearer = HTTPBearer(auto_error=False)


async def authenticated(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> Principal:
    # async: FastAPI would run a plain function in a thread pool, a thread hop per request.
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise ApiError(401, "MISSING_TOKEN", "this endpoint needs an 'Authorization: Bearer <token>' header")
    principal = await request.app.state.verifier.verify(credentials.credentials)
    request.state.principal = principal
    return principal


def require(*roles: Role):
    """A FastAPI dependency: the caller must hold one of these roles (admin always may)."""

    async def dependency(principal: Principal = Depends(authenticated)) -> Principal:
        if principal.role not in roles and principal.role != Role.ADMIN:
            raise ApiError(403, "ROLE_FORBIDDEN", f"role {principal.role} may not call this endpoint")
        return principal

    return dependency


def region_of(department: str) -> str | None:
    """The region code of a department (None for an unknown one): an ARS's scope."""
    found = Geography.load().department(department)
    return found.region_code if found else None


def ensure_department(principal: Principal, department: str) -> None:
    """Desks act on their own department only; the ARS on its region; admins everywhere."""
    if principal.role == Role.ADMIN:
        return
    if principal.role == Role.DESK and principal.department == department:
        return
    if principal.role == Role.ARS and principal.region and region_of(department) == principal.region:
        return
    raise ApiError(403, "OUT_OF_SCOPE", f"{principal.actor} may not see or act on department {department}")


def how_to_connect(issuer: str, role: Role, finess: str) -> dict[str, str]:
    """What an establishment's information system needs to act on the platform as itself: told
    when the establishment is registered, so that its integrator knows where to start."""
    from reflexe_common.topics import INBOUND_KINDS

    return {
        "oidc_issuer": issuer,
        "oidc_discovery": issuer.rstrip("/") + "/.well-known/openid-configuration",
        "oidc_client": (f"a confidential client (client credentials grant) whose service account has the realm "
                        f"role '{role}' and the attribute finess={finess}, created by the identity provider's "
                        f"administrator; locally: ./reflexe token {role} --finess {finess}"),
        "kafka_inbound_topic": INBOUND_KINDS[str(role)].topic(finess).name,
        "kafka_principal": (f"a SCRAM principal of its own, bound to this FINESS: python -m reflexe_common.kafka_acls "
                            f"register-system --finess {finess} --kind {role}"),
    }
