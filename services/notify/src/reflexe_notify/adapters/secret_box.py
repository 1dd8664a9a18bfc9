"""Webhook signing secrets sealed at rest (Fernet: AES-128-CBC + HMAC-SHA256, authenticated).

A copy of the database (a backup, a replica, a dump in a ticket) must not let anyone sign
webhooks in our name. The keys come from the environment (NOTIFY_SECRET_KEYS), never from the
database. Several keys make rotation possible: the first seals, every one opens.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from reflexe_common.webhook_secrets import SECRET_PREFIX

KEYS_VARIABLE = "NOTIFY_SECRET_KEYS"
HOW_TO_GENERATE = ('python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"')


class SecretUnreadable(Exception):
    """A sealed secret that none of the configured keys opens (a key was dropped too early)."""


def parse_keys(text: str) -> list[str]:
    """The comma-separated keys of NOTIFY_SECRET_KEYS; ValueError (never quoting a key) if unusable."""
    keys = [k.strip() for k in text.split(",") if k.strip()]
    if not keys:
        raise ValueError(f"{KEYS_VARIABLE} holds no key; generate one with: {HOW_TO_GENERATE}")
    for position, key in enumerate(keys, 1):
        try:
            Fernet(key)
        except (ValueError, TypeError):
            raise ValueError(f"key {position} of {KEYS_VARIABLE} is not a Fernet key (32 url-safe base64 bytes); "
                             f"generate one with: {HOW_TO_GENERATE}") from None
    return keys


def is_plaintext(stored: str) -> bool:
    """A secret stored before sealing existed (Fernet tokens never start like a secret)."""
    return stored.startswith(SECRET_PREFIX)


class SecretBox:
    def __init__(self, keys: Sequence[str]) -> None:
        if not keys:
            raise ValueError(f"{KEYS_VARIABLE} holds no key")
        self._fernet = MultiFernet([Fernet(k) for k in keys])
        # Every attempt signs with its subscription's secrets: each sealed one is opened once
        # (authenticating and decrypting it cost as much as the rest of the attempt).
        self._open = functools.lru_cache(maxsize=1024)(self._open_uncached)

    def seal(self, secret: str) -> str:
        return self._fernet.encrypt(secret.encode()).decode("ascii")

    def open(self, sealed: str) -> str:
        return self._open(sealed)

    def _open_uncached(self, sealed: str) -> str:
        try:
            return self._fernet.decrypt(sealed.encode("ascii")).decode()
        except InvalidToken:
            raise SecretUnreadable("no key of NOTIFY_SECRET_KEYS opens this webhook secret") from None

    def reseal(self, stored: str) -> str:
        """The same secret sealed under the first key (a plaintext one is sealed)."""
        if is_plaintext(stored):
            return self.seal(stored)
        try:
            return self._fernet.rotate(stored.encode("ascii")).decode("ascii")
        except InvalidToken:
            raise SecretUnreadable("no key of NOTIFY_SECRET_KEYS opens this webhook secret") from None
