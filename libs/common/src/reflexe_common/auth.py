"""Bearer-token authentication (JWT, HS256) and caller scoping for every endpoint.

A token names a role and the caller's scope: a hospital or an HAD by its FINESS, a desk by its
department, the ARS by its region. Endpoints ask for roles with `require(...)` and then check
the scope against the resource (a desk of 34 sees only department 34).

Mint a token for local use:  python -m reflexe_common.auth desk --department 34
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

import jwt
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from reflexe_common.errors import ApiError
from reflexe_common.geography import Geography

ISSUER = "reflexe"


class Role(StrEnum):
    HOSPITAL = "hospital"
    HAD = "had"
    DESK = "desk"
    ARS = "ars"
    ADMIN = "admin"


@dataclass(frozen=True)
class Principal:
    role: Role
    subject: str
    finess: str | None = None
    department: str | None = None
    region: str | None = None

    @property
    def actor(self) -> str:
        """How audit records and events name the caller (no personal data)."""
        scope = self.finess or self.department or self.region or self.subject
        return f"{self.role}:{scope}"


def mint(secret: str, role: Role | str, *, subject: str | None = None, finess: str | None = None,
         department: str | None = None, region: str | None = None, ttl_seconds: int = 12 * 3600) -> str:
    role = Role(role)
    required = {Role.HOSPITAL: finess, Role.HAD: finess, Role.DESK: department, Role.ARS: region, Role.ADMIN: "-"}[role]
    if not required:
        raise ValueError(f"a {role} token needs its scope ({'finess' if role in (Role.HOSPITAL, Role.HAD) else 'department' if role == Role.DESK else 'region'})")
    now = int(time.time())
    claims = {"iss": ISSUER, "sub": subject or f"{role}:{finess or department or region or 'admin'}", "role": str(role),
              "iat": now, "exp": now + ttl_seconds}
    for name, value in (("finess", finess), ("department", department), ("region", region)):
        if value:
            claims[name] = value
    return jwt.encode(claims, secret, algorithm="HS256")


def decode(secret: str, token: str) -> Principal:
    try:
        claims = jwt.decode(token, secret, algorithms=["HS256"], issuer=ISSUER, options={"require": ["exp", "sub", "role"]})
        return Principal(role=Role(claims["role"]), subject=claims["sub"], finess=claims.get("finess"),
                         department=claims.get("department"), region=claims.get("region"))
    except (jwt.InvalidTokenError, ValueError) as exc:
        raise ApiError(401, "INVALID_TOKEN", f"invalid bearer token: {exc}") from exc


_bearer = HTTPBearer(auto_error=False)


async def authenticated(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> Principal:
    # async: FastAPI would run a plain function in a thread pool, a thread hop per request.
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise ApiError(401, "MISSING_TOKEN", "this endpoint needs an 'Authorization: Bearer <token>' header")
    return decode(request.app.state.jwt_secret, credentials.credentials)


def require(*roles: Role):
    """A FastAPI dependency: the caller must hold one of these roles (admin always may)."""

    async def dependency(principal: Principal = Depends(authenticated)) -> Principal:
        if principal.role not in roles and principal.role != Role.ADMIN:
            raise ApiError(403, "ROLE_FORBIDDEN", f"role {principal.role} may not call this endpoint")
        return principal

    return dependency


def region_of(department: str) -> str | None:
    found = Geography.load().department(department)
    return found.region_code if found else None


def ensure_department(principal: Principal, department: str, region_of: Callable[[str], str | None] = region_of) -> None:
    """Desks act on their own department only; the ARS on its region; admins everywhere."""
    if principal.role == Role.ADMIN:
        return
    if principal.role == Role.DESK and principal.department == department:
        return
    if principal.role == Role.ARS and principal.region and region_of(department) == principal.region:
        return
    raise ApiError(403, "OUT_OF_SCOPE", f"{principal.actor} may not see or act on department {department}")


def main() -> None:
    from reflexe_common.settings import ServiceSettings

    parser = argparse.ArgumentParser(description="Mint a Réflexe bearer token for local use.")
    parser.add_argument("role", choices=[r.value for r in Role])
    parser.add_argument("--finess")
    parser.add_argument("--department")
    parser.add_argument("--region")
    parser.add_argument("--ttl-hours", type=float, default=12)
    args = parser.parse_args()
    print(mint(ServiceSettings().jwt_secret, args.role, finess=args.finess, department=args.department,
               region=args.region, ttl_seconds=int(args.ttl_hours * 3600)))


if __name__ == "__main__":
    main()
