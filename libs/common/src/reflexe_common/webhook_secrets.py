"""Standard Webhooks secrets (https://www.standardwebhooks.com/): `whsec_` followed by the base64
of 24 to 64 random bytes, the HMAC key. Notify creates and checks the secrets it signs with; the
simulator creates those of the receivers it plays. Signing and verification themselves are the
specification's reference library, `standardwebhooks`."""

from __future__ import annotations

import base64
import binascii
import secrets

SECRET_PREFIX = "whsec_"
MIN_KEY_BYTES, MAX_KEY_BYTES = 24, 64  # the specification's bounds on a secret


def generate_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key of a `whsec_<base64>` secret; ValueError (saying why) when it is not one.

    Stricter than the reference library, which decodes leniently: a subscriber's mistyped secret
    is refused when it is given rather than producing signatures nobody can verify."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError(f"a webhook secret starts with {SECRET_PREFIX!r}")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX):], validate=True)
    except binascii.Error as exc:
        raise ValueError("a webhook secret is 'whsec_' followed by base64") from exc
    if not MIN_KEY_BYTES <= len(key) <= MAX_KEY_BYTES:
        raise ValueError(f"a webhook secret holds {MIN_KEY_BYTES} to {MAX_KEY_BYTES} bytes, not {len(key)}")
    return key
