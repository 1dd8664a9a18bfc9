"""How every Kafka client of the platform connects: one place for the bootstrap servers, the
security protocol and the principal's credentials, so no producer, consumer, admin client or
faust app can be built without them.

Each service authenticates as its own principal (its ACLs are declared in kafka_acls.py). A
process gets its credentials from KAFKA_USERNAME/KAFKA_PASSWORD (production: one secret per
deployment); when those are unset, the principal is the service's own name and the password
REFLEXE_KAFKA_<SERVICE>_PASSWORD, which `deploy/local/infra.sh env` prints for every service, so
one developer shell can run all four services, each as itself.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass, field
from typing import Any

import faust

from reflexe_common.settings import ServiceSettings

SASL_PROTOCOLS = ("SASL_PLAINTEXT", "SASL_SSL")


@dataclass(frozen=True)
class KafkaAccess:
    """Where the broker is and who we are on it."""

    bootstrap: str
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str = "SCRAM-SHA-512"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ssl_cafile: str | None = None

    def __post_init__(self) -> None:
        if self.security_protocol not in ("PLAINTEXT", "SSL", *SASL_PROTOCOLS):
            raise ValueError(f"unsupported Kafka security protocol {self.security_protocol!r}")
        if self.security_protocol in SASL_PROTOCOLS and not (self.username and self.password):
            raise ValueError(f"Kafka {self.security_protocol} needs a username and a password "
                             f"(principal {self.username!r} has no password)")

    @property
    def sasl(self) -> bool:
        return self.security_protocol in SASL_PROTOCOLS

    def _ssl_context(self) -> ssl.SSLContext | None:
        if self.security_protocol not in ("SSL", "SASL_SSL"):
            return None
        return ssl.create_default_context(cafile=self.ssl_cafile)

    def options(self) -> dict[str, Any]:
        """Keyword arguments for AIOKafkaProducer, AIOKafkaConsumer and AIOKafkaAdminClient."""
        options: dict[str, Any] = {"bootstrap_servers": self.bootstrap, "security_protocol": self.security_protocol}
        context = self._ssl_context()
        if context is not None:
            options["ssl_context"] = context
        if self.sasl:
            options.update(sasl_mechanism=self.sasl_mechanism, sasl_plain_username=self.username,
                           sasl_plain_password=self.password)
        return options

    def faust_options(self) -> dict[str, Any]:
        """Keyword arguments for faust.App: the broker URL and, with SASL, its credentials
        (faust-streaming's SASLCredentials takes SCRAM-SHA-512 as its mechanism)."""
        options: dict[str, Any] = {"broker": [f"kafka://{b}" for b in self.bootstrap.split(",")]}
        context = self._ssl_context()
        if self.sasl:
            options["broker_credentials"] = faust.SASLCredentials(
                username=self.username, password=self.password, mechanism=self.sasl_mechanism, ssl_context=context)
        elif context is not None:
            options["broker_credentials"] = faust.SSLCredentials(context)
        return options

    def as_principal(self, username: str, password: str) -> KafkaAccess:
        return KafkaAccess(self.bootstrap, self.security_protocol, self.sasl_mechanism, username, password,
                           self.ssl_cafile)


def password_variable(principal: str) -> str:
    """The environment variable infra.sh prints a local principal's password in."""
    return "REFLEXE_KAFKA_" + principal.upper().replace("-", "_") + "_PASSWORD"


def kafka_access(settings: ServiceSettings, service: str) -> KafkaAccess:
    """The service's connection: its own principal unless KAFKA_USERNAME names another."""
    username = settings.kafka_username or service
    password = (settings.kafka_password.get_secret_value() if settings.kafka_password is not None
                else os.environ.get(password_variable(username)))
    return KafkaAccess(settings.kafka_bootstrap, settings.kafka_security_protocol, settings.kafka_sasl_mechanism,
                       username, password, settings.kafka_ssl_cafile)


def client_options(settings: ServiceSettings, service: str) -> dict[str, Any]:
    """The aiokafka keyword arguments of the service's clients."""
    return kafka_access(settings, service).options()
