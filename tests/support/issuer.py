"""The suite's OpenID Connect issuer: a key pair made for the run and its JWKS served over HTTP.

Services verify tokens exactly as in production (discovery document, JWKS, signature, claims);
only the issuer is this process instead of Keycloak, so that the suite does not pay for an
identity provider in every test. The end-to-end tests against the real Keycloak are in
tests/e2e/test_keycloak*.py.

It also plays the provider's side of the browser login (authorization code with PKCE, refresh,
logout) for the desk page's integration tests: the login page is skipped, the person who logs in
is the one named by `login_hint` ("desk:department=34"), as a provider would after its form.

The server runs in a thread so that services in other processes (and any event loop) reach it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
import uuid
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlencode

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa

AUDIENCE = "reflexe"
REALM_PATH = "/realms/test"


class SuiteIssuer:
    def __init__(self) -> None:
        self.rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec_key = ec.generate_private_key(ec.SECP256R1())
        self.rsa_kid, self.ec_kid = f"rsa-{uuid.uuid4().hex[:8]}", f"ec-{uuid.uuid4().hex[:8]}"
        self.extra_keys: list[dict[str, Any]] = []  # keys published later (rotation tests)
        self.jwks_fetches = 0
        self.access_ttl_seconds = 300
        self.codes: dict[str, dict[str, Any]] = {}
        self.refresh_tokens: dict[str, dict[str, Any]] = {}
        self.logouts: list[dict[str, str]] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="test-issuer", daemon=True).start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}{REALM_PATH}"

    def jwks(self) -> dict[str, Any]:
        keys = [{**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.rsa_key.public_key())), "kid": self.rsa_kid,
                 "alg": "RS256", "use": "sig"},
                {**json.loads(jwt.algorithms.ECAlgorithm.to_jwk(self.ec_key.public_key())), "kid": self.ec_kid,
                 "alg": "ES256", "use": "sig"}]
        return {"keys": keys + self.extra_keys}

    def _handler(self):
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                path, _, query = self.path.partition("?")
                params = dict(parse_qsl(query))
                endpoints = f"{REALM_PATH}/protocol/openid-connect"
                if path == f"{REALM_PATH}/.well-known/openid-configuration":
                    self._json(200, issuer.discovery())
                elif path == f"{endpoints}/certs":
                    issuer.jwks_fetches += 1
                    self._json(200, issuer.jwks())
                elif path == f"{endpoints}/auth":
                    self._redirect(issuer.authorize(params))
                elif path == f"{endpoints}/logout":
                    issuer.logouts.append(params)
                    self._redirect(params.get("post_logout_redirect_uri", issuer.url))
                else:
                    self.send_error(404)

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                form = dict(parse_qsl(self.rfile.read(length).decode()))
                if self.path == f"{REALM_PATH}/protocol/openid-connect/token":
                    status, body = issuer.token_endpoint(form)
                    self._json(status, body)
                else:
                    self.send_error(404)

            def _json(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _redirect(self, location: str) -> None:
                self.send_response(302)
                self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        return Handler

    def discovery(self) -> dict[str, Any]:
        endpoints = f"{self.url}/protocol/openid-connect"
        return {"issuer": self.url, "jwks_uri": f"{endpoints}/certs", "authorization_endpoint": f"{endpoints}/auth",
                "token_endpoint": f"{endpoints}/token", "end_session_endpoint": f"{endpoints}/logout",
                "code_challenge_methods_supported": ["S256"]}

    def authorize(self, params: dict[str, str]) -> str:
        """Where the provider sends the browser back: with a code for the person in login_hint."""
        role, _, scope = params.get("login_hint", "").partition(":")
        if params.get("response_type") != "code" or params.get("code_challenge_method") != "S256" or not role:
            error = {"error": "invalid_request", "state": params.get("state", "")}
            return f"{params.get('redirect_uri', self.url)}?{urlencode(error)}"
        code = secrets.token_urlsafe(16)
        self.codes[code] = {**params, "role": role, "granted": dict(parse_qsl(scope.replace(",", "&")))}
        return f"{params['redirect_uri']}?{urlencode({'code': code, 'state': params.get('state', '')})}"

    def token_endpoint(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        if form.get("grant_type") == "authorization_code":
            login = self.codes.pop(form.get("code", ""), None)
            verifier = form.get("code_verifier", "")
            challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
            if (login is None or login["code_challenge"] != challenge or login["redirect_uri"] != form.get("redirect_uri")
                    or login["client_id"] != form.get("client_id")):
                return 400, {"error": "invalid_grant"}
        elif form.get("grant_type") == "refresh_token":
            login = self.refresh_tokens.pop(form.get("refresh_token", ""), None)  # rotated: usable once
            if login is None:
                return 400, {"error": "invalid_grant"}
        else:
            return 400, {"error": "unsupported_grant_type"}
        subject = login.setdefault("sub", f"person-{uuid.uuid4().hex[:8]}")
        refresh = secrets.token_urlsafe(24)
        self.refresh_tokens[refresh] = login
        now = int(time.time())
        id_token = self.sign({"iss": self.url, "aud": login["client_id"], "sub": subject, "iat": now,
                              "exp": now + self.access_ttl_seconds, "nonce": login.get("nonce", "")})
        access = self.token(login["role"], subject=subject, ttl_seconds=self.access_ttl_seconds, **login["granted"])
        return 200, {"access_token": access, "token_type": "Bearer", "expires_in": self.access_ttl_seconds,
                     "refresh_token": refresh, "refresh_expires_in": 1800, "id_token": id_token}

    def claims(self, role: str, *, subject: str | None = None, ttl_seconds: int = 3600, **scope: str) -> dict[str, Any]:
        now = int(time.time())
        return {"iss": self.url, "aud": AUDIENCE, "sub": subject or f"test-{role}-{uuid.uuid4().hex[:8]}",
                "iat": now, "nbf": now, "exp": now + ttl_seconds, "jti": str(uuid.uuid4()), "realm_access": {"roles": [role, "offline_access"]},
                **scope}

    def sign(self, claims: dict[str, Any], algorithm: str = "RS256", kid: str | None = None) -> str:
        key = self.rsa_key if algorithm == "RS256" else self.ec_key
        default_kid = self.rsa_kid if algorithm == "RS256" else self.ec_kid
        return jwt.encode(claims, key, algorithm=algorithm, headers={"kid": kid or default_kid})

    def token(self, role: str, *, subject: str | None = None, ttl_seconds: int = 3600, **scope: str) -> str:
        return self.sign(self.claims(role, subject=subject, ttl_seconds=ttl_seconds, **scope))


@cache
def suite_issuer() -> SuiteIssuer:
    """One issuer for the whole run, started on first use."""
    return SuiteIssuer()
