"""A client of the LOCAL Keycloak (deploy/local/keycloak.sh), for developer tooling only.

`./reflexe token`, the simulator and the tests use it to get real access tokens from the local
identity provider: a hospital or HAD system by client credentials (its client is created on
demand: ``system-<role>-<finess>``, its service account carrying the role and the ``finess``
attribute), a person (desk, ARS, admin) by the password grant of the ``reflexe-cli`` client
(the user is created on demand). It administers the realm through Keycloak's admin REST API as
the master realm's administrator, so it must never be pointed at a real identity provider.

Environment (what ``deploy/local/keycloak.sh env`` exports):
  OIDC_ISSUER               the realm's issuer, e.g. http://127.0.0.1:18080/realms/reflexe
                            (the server's base URL and the realm are read from it)
  KEYCLOAK_ADMIN_USER       the master realm's administrator [admin]
  KEYCLOAK_ADMIN_PASSWORD   its password [admin]  (the local defaults of keycloak.sh)
  REFLEXE_CLI_CLIENT_SECRET the secret of the realm's ``reflexe-cli`` client [local-reflexe-cli]

Command line (prints an access token on stdout)::

    python -m reflexe_common.local_idp hospital --finess 349100016
    python -m reflexe_common.local_idp desk --department 34
    python -m reflexe_common.local_idp liaison --finess 349000018 --department 34
    python -m reflexe_common.local_idp ars --region 76
    python -m reflexe_common.local_idp admin
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import secrets
import sys
import time
from typing import Any

import httpx

from reflexe_common.finess import FINESS_SHAPE, is_finess

CLI_CLIENT_ID = "reflexe-cli"
DEFAULT_CLI_SECRET = "local-reflexe-cli"
# Roles played by a system (client credentials) rather than a person; their scope is a FINESS.
SYSTEM_ROLES = frozenset({"hospital", "had"})
SCOPE_ATTRIBUTES = ("finess", "department", "region")
SCOPE_RE = {"finess": re.compile(rf"^{FINESS_SHAPE.pattern}$"), "department": re.compile(r"^([0-9]{2}|2A|2B|97[1-6])$"),
            "region": re.compile(r"^[0-9]{2}$")}
# Refresh the admin token this long before it expires (master's admin tokens last 60 s).
ADMIN_TOKEN_MARGIN_S = 10.0


class LocalIdpError(RuntimeError):
    """The local Keycloak refused or failed a request (the message carries its answer)."""


def split_issuer(issuer: str) -> tuple[str, str]:
    """(server base URL, realm) of an issuer such as http://127.0.0.1:18080/realms/reflexe."""
    base, sep, realm = issuer.rstrip("/").rpartition("/realms/")
    if not sep or not base or not realm or "/" in realm:
        raise ValueError(f"not a Keycloak realm issuer: {issuer!r}")
    return base, realm


def _check_scope(scope: dict[str, str | None]) -> dict[str, str]:
    unknown = set(scope) - set(SCOPE_ATTRIBUTES)
    if unknown:
        raise ValueError(f"unknown scope attributes {sorted(unknown)}; expected {SCOPE_ATTRIBUTES}")
    given = {name: value for name, value in scope.items() if value is not None}
    for name, value in given.items():
        if not SCOPE_RE[name].match(value) or (name == "finess" and not is_finess(value)):
            raise ValueError(f"invalid {name} {value!r}")
    return given


def person_username(role: str, scope: dict[str, str]) -> str:
    """The local demo user playing this role and scope: ``desk34``, ``ars76``, ``admin-reflexe``; a
    liaison nurse is named by her HAD (``liaison349000018``), the department she works in being an
    attribute of hers, not part of who she is."""
    if role == "liaison":
        if "finess" not in scope or "department" not in scope:
            raise ValueError("a liaison nurse needs her HAD's FINESS and the department she works in")
        return f"liaison{scope['finess']}"
    return f"{role}-reflexe" if not scope else role + "".join(scope.values())


class LocalIdentityProvider:
    """Async client of a local Keycloak realm: provisions system clients and users, gets tokens."""

    def __init__(self, base_url: str, realm: str = "reflexe", admin_user: str = "admin",
                 admin_password: str = "admin", cli_client_secret: str = DEFAULT_CLI_SECRET,
                 timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.realm = realm
        self.issuer = f"{self.base_url}/realms/{realm}"
        self._admin_user = admin_user
        self._admin_password = admin_password
        self._cli_secret = cli_client_secret
        self._http = httpx.AsyncClient(timeout=timeout)
        self._admin_token: tuple[str, float] | None = None
        self._admin_lock = asyncio.Lock()

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> LocalIdentityProvider:
        env = os.environ if env is None else env
        issuer = env.get("OIDC_ISSUER")
        if not issuer:
            raise LocalIdpError("OIDC_ISSUER is not set (eval \"$(deploy/local/keycloak.sh env)\")")
        base, realm = split_issuer(issuer)
        return cls(base, realm, env.get("KEYCLOAK_ADMIN_USER", "admin"), env.get("KEYCLOAK_ADMIN_PASSWORD", "admin"),
                   env.get("REFLEXE_CLI_CLIENT_SECRET", DEFAULT_CLI_SECRET))

    async def __aenter__(self) -> LocalIdentityProvider:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # ------------------------------------------------------------ tokens

    async def token_response(self, form: dict[str, str]) -> dict[str, Any]:
        """The realm's token endpoint answer (access_token, expires_in, ...) for this grant."""
        response = await self._http.post(f"{self.issuer}/protocol/openid-connect/token", data=form)
        if response.status_code != 200:
            raise LocalIdpError(f"token request ({form.get('grant_type')}) refused: "
                                f"{response.status_code} {response.text[:300]}")
        return response.json()

    async def client_credentials_token(self, client_id: str, secret: str) -> str:
        answer = await self.token_response({"grant_type": "client_credentials", "client_id": client_id,
                                            "client_secret": secret})
        return answer["access_token"]

    async def password_token(self, username: str, password: str) -> str:
        """A person's access token, through the realm's local-tooling client ``reflexe-cli``."""
        answer = await self.token_response({"grant_type": "password", "client_id": CLI_CLIENT_ID,
                                            "client_secret": self._cli_secret, "username": username,
                                            "password": password})
        return answer["access_token"]

    async def issue(self, role: str, *, finess: str | None = None, department: str | None = None,
                    region: str | None = None) -> tuple[str, float]:
        """An access token for this role and scope, and when it expires (epoch seconds), creating
        the system client (hospital, had) or the user (desk<dept>, ars<region>, admin-reflexe...)
        when missing. A person's password is their user name: local demo accounts only."""
        scope = _check_scope({"finess": finess, "department": department, "region": region})
        if role in SYSTEM_ROLES:
            if "finess" not in scope:
                raise ValueError(f"role {role} needs a FINESS")
            client_id, secret = await self.ensure_system_client(role, scope["finess"])
            form = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret}
        else:
            username = person_username(role, scope)
            await self.ensure_user(username, role, username, **scope)
            form = {"grant_type": "password", "client_id": CLI_CLIENT_ID, "client_secret": self._cli_secret,
                    "username": username, "password": username}
        started = time.time()
        answer = await self.token_response(form)
        return answer["access_token"], started + float(answer.get("expires_in", 0))

    async def token_for(self, role: str, **scope: str | None) -> str:
        token, _ = await self.issue(role, **scope)
        return token

    # ------------------------------------------------------------ provisioning (admin REST API)

    async def ensure_system_client(self, role: str, finess: str) -> tuple[str, str]:
        """The confidential client ``system-<role>-<finess>`` (client credentials only) whose service
        account holds the realm role and the ``finess`` attribute, created if missing; returns
        (client_id, secret)."""
        if not is_finess(finess):
            raise ValueError(f"invalid FINESS {finess!r}")
        role_representation = await self._realm_role(role)
        client_id = f"system-{role}-{finess}"
        uuid = await self._client_uuid(client_id)
        if uuid is None:
            representation = {
                "clientId": client_id, "name": f"{role} system {finess} (local)", "enabled": True,
                "protocol": "openid-connect", "publicClient": False, "clientAuthenticatorType": "client-secret",
                "secret": secrets.token_urlsafe(24), "serviceAccountsEnabled": True,
                "standardFlowEnabled": False, "implicitFlowEnabled": False, "directAccessGrantsEnabled": False,
            }
            response = await self._admin("POST", "/clients", json=representation, ok=(201, 409))
            # 409: created meanwhile by another caller; either way it exists now.
            uuid = await self._client_uuid(client_id)
            if uuid is None:
                raise LocalIdpError(f"client {client_id} not found after creation ({response.status_code})")
        account = (await self._admin("GET", f"/clients/{uuid}/service-account-user")).json()
        await self._set_attributes(account, {"finess": finess})
        await self._grant_realm_role(account["id"], role_representation)
        secret = (await self._admin("GET", f"/clients/{uuid}/client-secret")).json()["value"]
        return client_id, secret

    async def ensure_user(self, username: str, role: str, password: str, **scope: str | None) -> str:
        """The user (created if missing) with this realm role, scope attributes (finess,
        department, region) and password; returns its id."""
        attributes = _check_scope(scope)
        role_representation = await self._realm_role(role)
        user = await self._user(username)
        if user is None:
            representation = {
                "username": username, "enabled": True, "emailVerified": True,
                "email": f"{username}@reflexe.invalid", "firstName": role, "lastName": username,
                "attributes": {name: [value] for name, value in attributes.items()},
                "credentials": [{"type": "password", "value": password, "temporary": False}],
            }
            await self._admin("POST", "/users", json=representation, ok=(201, 409))
            user = await self._user(username)
            if user is None:
                raise LocalIdpError(f"user {username} not found after creation")
        else:
            await self._set_attributes(user, attributes)
            await self._admin("PUT", f"/users/{user['id']}/reset-password",
                              json={"type": "password", "value": password, "temporary": False})
        await self._grant_realm_role(user["id"], role_representation)
        return user["id"]

    async def _client_uuid(self, client_id: str) -> str | None:
        found = (await self._admin("GET", "/clients", params={"clientId": client_id})).json()
        return found[0]["id"] if found else None

    async def _user(self, username: str) -> dict[str, Any] | None:
        found = (await self._admin("GET", "/users", params={"username": username, "exact": "true"})).json()
        return found[0] if found else None

    async def _set_attributes(self, user: dict[str, Any], attributes: dict[str, str]) -> None:
        current = user.get("attributes") or {}
        if all(current.get(name) == [value] for name, value in attributes.items()):
            return
        # A PUT replaces the whole representation: send it back with the attributes changed.
        await self._admin("PUT", f"/users/{user['id']}", json={
            **user, "attributes": {**current, **{name: [value] for name, value in attributes.items()}}})

    async def _realm_role(self, role: str) -> dict[str, Any]:
        response = await self._admin("GET", f"/roles/{role}", ok=(200, 404))
        if response.status_code == 404:
            raise ValueError(f"no realm role {role!r} in realm {self.realm}")
        return response.json()

    async def _grant_realm_role(self, user_id: str, role: dict[str, Any]) -> None:
        granted = (await self._admin("GET", f"/users/{user_id}/role-mappings/realm")).json()
        if any(r["name"] == role["name"] for r in granted):
            return
        await self._admin("POST", f"/users/{user_id}/role-mappings/realm", json=[role])

    async def _admin(self, method: str, path: str, ok: tuple[int, ...] = (200, 201, 204), **kwargs: Any) -> httpx.Response:
        token = await self._admin_access_token()
        response = await self._http.request(method, f"{self.base_url}/admin/realms/{self.realm}{path}",
                                            headers={"Authorization": f"Bearer {token}"}, **kwargs)
        if response.status_code not in ok:
            raise LocalIdpError(f"admin {method} {path}: {response.status_code} {response.text[:300]}")
        return response

    async def _admin_access_token(self) -> str:
        async with self._admin_lock:
            if self._admin_token and self._admin_token[1] - ADMIN_TOKEN_MARGIN_S > time.monotonic():
                return self._admin_token[0]
            started = time.monotonic()
            response = await self._http.post(
                f"{self.base_url}/realms/master/protocol/openid-connect/token",
                data={"grant_type": "password", "client_id": "admin-cli", "username": self._admin_user,
                      "password": self._admin_password})
            if response.status_code != 200:
                raise LocalIdpError(f"admin login to the local Keycloak refused: {response.status_code} "
                                    f"{response.text[:300]}")
            answer = response.json()
            self._admin_token = (answer["access_token"], started + float(answer.get("expires_in", 60)))
            return self._admin_token[0]


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m reflexe_common.local_idp",
        description="Print an access token of the local Keycloak for a role and its scope "
                    "(creating the establishment's client or the person's user when missing).")
    parser.add_argument("role", help="hospital, had, desk, ars, admin (or another realm role)")
    parser.add_argument("--finess", help="establishment (hospital, had; a liaison nurse's HAD)")
    parser.add_argument("--department", help="department code (desk; the department a liaison nurse works in)")
    parser.add_argument("--region", help="region code (ars)")
    return parser.parse_args(argv)


async def _main(args: argparse.Namespace) -> str:
    async with LocalIdentityProvider.from_env() as idp:
        return await idp.token_for(args.role, finess=args.finess, department=args.department, region=args.region)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    try:
        print(asyncio.run(_main(args)))
    except (LocalIdpError, ValueError, httpx.HTTPError) as exc:
        print(f"local_idp: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
