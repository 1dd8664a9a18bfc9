"""The patient's pseudonym, computed at the edge from the hospital's own identifier (PID-3, type PI).

HMAC-SHA-256 under GATEWAY_PSEUDONYM_KEY of "<assigning authority>|<identifier>": the platform's one
pseudonym format (64 lowercase hex, reflexe_common.privacy). The authority is part of the input
because two hospitals may reuse the same local number for different patients.
"""

from __future__ import annotations

import hashlib
import hmac


def pseudonymise(key: bytes, identifier: str, authority: str) -> str:
    if not key:
        raise ValueError("the pseudonym key must not be empty")
    return hmac.new(key, f"{authority}|{identifier}".encode(), hashlib.sha256).hexdigest()
