"""The pages' side of OpenID Connect: authorization code with PKCE, refresh, logout at the provider.

The browser only ever holds an opaque session id; the tokens stay on the server (see
adapters/sessions.py). The provider is the one issuer the services trust (OIDC_ISSUER), and the
pages log in through its public client (NOTIFY_OIDC_CLIENT_ID), which needs no secret: PKCE binds
the code to the login that asked for it.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx
import jwt

from reflexe_common.auth import ALGORITHMS, JwksCache
from reflexe_common.errors import ApiError


@dataclass(frozen=True)
class Login:
    """What one login attempt keeps between sending the browser away and its return."""

    state: str
    code_verifier: str
    nonce: str

    @classmethod
    def new(cls) -> Login:
        return cls(secrets.token_urlsafe(32), secrets.token_urlsafe(48), secrets.token_urlsafe(16))

    @property
    def code_challenge(self) -> str:
        digest = hashlib.sha256(self.code_verifier.encode("ascii")).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class TokenSet:
    access_token: str
    refresh_token: str | None
    id_token: str | None
    access_expires_at: float
    refresh_expires_at: float | None


class LoginFailed(Exception):
    pass


class OidcClient:
    def __init__(self, issuer: str, client_id: str, http: httpx.AsyncClient, jwks: JwksCache,
                 discovery_url: str | None = None) -> None:
        self.issuer = issuer
        # Where this server reads the provider's metadata: the issuer's own, unless the provider is
        # reached on another address from here than from browsers (a container network).
        self.discovery_url = discovery_url or issuer.rstrip("/") + "/.well-known/openid-configuration"
        self.client_id = client_id
        self._http = http
        self._jwks = jwks
        self._discovery: dict[str, Any] | None = None

    async def _endpoint(self, name: str) -> str | None:
        if self._discovery is None:
            response = await self._http.get(self.discovery_url)
            response.raise_for_status()
            document = response.json()
            if document.get("issuer") != self.issuer:
                raise LoginFailed(f"the provider's discovery document names issuer {document.get('issuer')!r}")
            self._discovery = document
        return self._discovery.get(name)

    async def authorization_url(self, login: Login, redirect_uri: str, login_hint: str | None = None) -> str:
        params = {"response_type": "code", "client_id": self.client_id, "redirect_uri": redirect_uri,
                  "scope": "openid", "state": login.state, "nonce": login.nonce,
                  "code_challenge": login.code_challenge, "code_challenge_method": "S256"}
        if login_hint:
            params["login_hint"] = login_hint
        return f"{await self._endpoint('authorization_endpoint')}?{urlencode(params)}"

    async def exchange(self, code: str, login: Login, redirect_uri: str) -> TokenSet:
        tokens = await self._token_request({"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri,
                                            "code_verifier": login.code_verifier})
        if tokens.id_token is None:
            raise LoginFailed("the provider returned no ID token")
        await self._check_id_token(tokens.id_token, login.nonce)
        return tokens

    async def refresh(self, refresh_token: str) -> TokenSet:
        return await self._token_request({"grant_type": "refresh_token", "refresh_token": refresh_token})

    async def logout_url(self, id_token: str | None, post_logout_redirect_uri: str) -> str | None:
        endpoint = await self._endpoint("end_session_endpoint")
        if endpoint is None:
            return None
        params = {"client_id": self.client_id, "post_logout_redirect_uri": post_logout_redirect_uri}
        if id_token:
            params["id_token_hint"] = id_token
        return f"{endpoint}?{urlencode(params)}"

    async def _token_request(self, form: dict[str, str]) -> TokenSet:
        try:
            response = await self._http.post(await self._endpoint("token_endpoint"),
                                             data={**form, "client_id": self.client_id})
        except httpx.HTTPError as exc:
            raise LoginFailed(f"the provider cannot be reached: {exc!r}") from exc
        if response.status_code != 200:
            raise LoginFailed(f"the provider refused the token request ({response.status_code})")
        body = response.json()
        now = time.time()
        refresh_in = body.get("refresh_expires_in")
        return TokenSet(access_token=body["access_token"], refresh_token=body.get("refresh_token"),
                        id_token=body.get("id_token"), access_expires_at=now + float(body.get("expires_in", 60)),
                        # Keycloak says 0 for a refresh token without an idle limit (offline sessions).
                        refresh_expires_at=now + float(refresh_in) if refresh_in else None)

    async def _check_id_token(self, id_token: str, nonce: str) -> None:
        """The ID token is the provider's statement of who logged in, for this login (the nonce)."""
        try:
            header = jwt.get_unverified_header(id_token)
            key = await self._jwks.key(str(header.get("kid")))
            claims = jwt.decode(id_token, key.key, algorithms=list(ALGORITHMS), audience=self.client_id,
                                issuer=self.issuer, leeway=30)
        except (jwt.InvalidTokenError, ApiError) as exc:
            raise LoginFailed(f"invalid ID token: {exc}") from exc
        if claims.get("nonce") != nonce:
            raise LoginFailed("the ID token was not issued for this login")
