"""The gateway's settings, read from the environment."""

from __future__ import annotations

import ipaddress
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from reflexe_common.finess import FINESS_PROBLEM, is_finess
from reflexe_common.settings import ServiceSettings


class Sender(BaseModel):
    """An information system allowed to send: its kind and the networks it connects from."""

    kind: Literal["hospital", "had"]
    networks: list[str] = Field(min_length=1)

    @field_validator("networks")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for network in value:
            ipaddress.ip_network(network, strict=False)
        return value

    def allows(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in ipaddress.ip_network(n, strict=False) for n in self.networks)


class GatewaySettings(ServiceSettings):
    # An empty variable means unset (compose passes `${GATEWAY_SENDERS:-}` through as ""): the
    # default applies, and a required setting left empty still stops the start.
    model_config = SettingsConfigDict(env_ignore_empty=True)

    http_port: int = Field(8005, validation_alias="GATEWAY_HTTP_PORT")
    mllp_host: str = Field("127.0.0.1", validation_alias="GATEWAY_MLLP_HOST")
    mllp_port: int = Field(2575, validation_alias="GATEWAY_MLLP_PORT")
    # Required, never logged: the HMAC key of the patients' pseudonyms.
    pseudonym_key: SecretStr = Field(validation_alias="GATEWAY_PSEUDONYM_KEY", min_length=16)
    # The allow-list, as JSON: {"<FINESS>": {"kind": "hospital"|"had", "networks": ["10.1.2.0/24"]}}.
    senders: dict[str, Sender] = Field(default_factory=dict, validation_alias="GATEWAY_SENDERS")

    @field_validator("senders")
    @classmethod
    def _senders_are_finess(cls, value: dict[str, Sender]) -> dict[str, Sender]:
        # A mistyped FINESS in the allow-list would silently refuse that sender's every message.
        for finess in value:
            if not is_finess(finess):
                raise ValueError(f"GATEWAY_SENDERS key {finess!r}: {FINESS_PROBLEM}")
        return value
    referral_url: str = Field("http://127.0.0.1:8001", validation_alias="GATEWAY_REFERRAL_URL")
    # The gateway's own confidential client at the identity provider (client-credentials grant).
    client_id: str = Field("reflexe-gateway", validation_alias="GATEWAY_CLIENT_ID")
    client_secret: SecretStr | None = Field(None, validation_alias="GATEWAY_CLIENT_SECRET")
    # The provider's metadata as the gateway reaches it, when that differs from OIDC_ISSUER's
    # address (compose: keycloak:8080 in-network, while tokens name localhost:18080).
    oidc_discovery_url: str | None = Field(None, validation_alias="GATEWAY_OIDC_DISCOVERY_URL")
    apply_poll_seconds: float = Field(0.2, gt=0, validation_alias="GATEWAY_APPLY_POLL_SECONDS")
    max_message_bytes: int = Field(1_048_576, gt=0, validation_alias="GATEWAY_MAX_MESSAGE_BYTES")
