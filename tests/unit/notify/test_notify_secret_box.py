"""Webhook secrets sealed at rest under rotatable keys from the environment."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet
from pydantic import ValidationError

from reflexe_notify.adapters.secret_box import SecretBox, SecretUnreadable, is_plaintext, parse_keys
from reflexe_common.webhook_secrets import generate_secret
from reflexe_notify.settings import NotifySettings


def key() -> str:
    return Fernet.generate_key().decode()


def test_a_sealed_secret_is_not_the_secret_and_opens_to_it() -> None:
    box, secret = SecretBox([key()]), generate_secret()
    sealed = box.seal(secret)
    assert secret not in sealed and not is_plaintext(sealed) and is_plaintext(secret)
    assert box.seal(secret) != sealed  # a fresh IV each time
    assert box.open(sealed) == secret


def test_rotation_reseals_under_the_first_key_so_the_old_one_can_go() -> None:
    old, new, secret = key(), key(), generate_secret()
    sealed_old = SecretBox([old]).seal(secret)
    both = SecretBox([new, old])
    assert both.open(sealed_old) == secret  # every key opens
    resealed = both.reseal(sealed_old)
    assert SecretBox([new]).open(resealed) == secret
    with pytest.raises(SecretUnreadable):
        SecretBox([old]).open(resealed)
    with pytest.raises(SecretUnreadable):
        SecretBox([new]).open(sealed_old)  # dropped too early: refused, not garbage
    # A secret stored before sealing existed is sealed by the same step.
    assert SecretBox([new]).open(both.reseal(secret)) == secret


def test_keys_come_from_the_environment_and_a_bad_one_is_not_quoted() -> None:
    first, second = key(), key()
    assert parse_keys(f" {first} , {second} ") == [first, second]
    for bad in ("", " , ", f"{first},not-a-key"):
        with pytest.raises(ValueError, match="NOTIFY_SECRET_KEYS") as refused:
            parse_keys(bad)
        assert "not-a-key" not in str(refused.value)


def test_the_service_refuses_to_start_without_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SECRET_KEYS", raising=False)
    with pytest.raises(ValidationError, match="NOTIFY_SECRET_KEYS"):
        NotifySettings(OIDC_ISSUER="https://issuer.test")
    with pytest.raises(ValidationError) as refused:
        NotifySettings(OIDC_ISSUER="https://issuer.test", NOTIFY_SECRET_KEYS="almost-a-key")
    assert "almost-a-key" not in str(refused.value)
    settings = NotifySettings(OIDC_ISSUER="https://issuer.test", NOTIFY_SECRET_KEYS=key())
    assert settings.allow_insecure_webhooks is False and settings.allowed_networks == ()  # safe defaults
    assert settings.secret_key_list[0] not in repr(settings)
