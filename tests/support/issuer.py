"""The suite's OpenID Connect issuer: a key pair made for the run and its JWKS served over HTTP.

Services verify tokens exactly as in production (discovery document, JWKS, signature, claims);
only the issuer is this process instead of Keycloak, so that the suite does not pay for an
identity provider in every test. The end-to-end tests against the real Keycloak are in
tests/e2e/test_keycloak*.py.

The server runs in a thread so that services in other processes (and any event loop) reach it.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

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
                if self.path == f"{REALM_PATH}/.well-known/openid-configuration":
                    body = {"issuer": issuer.url, "jwks_uri": f"{issuer.url}/protocol/openid-connect/certs"}
                elif self.path == f"{REALM_PATH}/protocol/openid-connect/certs":
                    issuer.jwks_fetches += 1
                    body = issuer.jwks()
                else:
                    self.send_error(404)
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        return Handler

    def claims(self, role: str, *, subject: str | None = None, ttl_seconds: int = 3600, **scope: str) -> dict[str, Any]:
        now = int(time.time())
        return {"iss": self.url, "aud": AUDIENCE, "sub": subject or f"test-{role}-{uuid.uuid4().hex[:8]}",
                "iat": now, "nbf": now, "exp": now + ttl_seconds, "realm_access": {"roles": [role, "offline_access"]},
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
