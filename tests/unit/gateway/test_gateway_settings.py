"""The gateway's allow-list holds FINESS numbers with their check key: a mistyped one stops the start."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from reflexe_gateway.settings import GatewaySettings

BASE = {"DATABASE_URL": "postgresql://u:p@127.0.0.1:1/db", "OIDC_ISSUER": "http://127.0.0.1:9/realms/r",
        "GATEWAY_PSEUDONYM_KEY": "k" * 32}


def test_the_allow_list_takes_valid_finess_numbers():
    settings = GatewaySettings(**BASE, GATEWAY_SENDERS={"340780477": {"kind": "hospital", "networks": ["10.0.0.0/8"]}})
    assert list(settings.senders) == ["340780477"]


def test_a_mistyped_finess_in_the_allow_list_stops_the_start():
    with pytest.raises(ValidationError, match="340780478.*Luhn key"):
        GatewaySettings(**BASE, GATEWAY_SENDERS={"340780478": {"kind": "hospital", "networks": ["10.0.0.0/8"]}})
