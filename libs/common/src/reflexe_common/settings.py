"""Configuration: one frozen pydantic-settings object per service, read from the environment."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    """Settings every service shares; each service subclasses it with its own fields."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore")

    kafka_bootstrap: str = Field("127.0.0.1:19092", validation_alias="KAFKA_BOOTSTRAP")
    # Kafka authentication (reflexe_common.kafka): SCRAM over SASL; SASL_SSL outside loopback.
    # Without KAFKA_USERNAME/KAFKA_PASSWORD a service is its own principal, with the password
    # that `infra.sh env` prints as REFLEXE_KAFKA_<SERVICE>_PASSWORD.
    kafka_security_protocol: str = Field("SASL_PLAINTEXT", validation_alias="KAFKA_SECURITY_PROTOCOL")
    kafka_sasl_mechanism: str = Field("SCRAM-SHA-512", validation_alias="KAFKA_SASL_MECHANISM")
    kafka_username: str | None = Field(None, validation_alias="KAFKA_USERNAME")
    kafka_password: SecretStr | None = Field(None, validation_alias="KAFKA_PASSWORD")
    kafka_ssl_cafile: str | None = Field(None, validation_alias="KAFKA_SSL_CAFILE")
    # Locally each service creates the topics it lacks (topics.py). In production they are
    # declared to the Kafka operator with their replication (deploy/k8s): a service then only
    # verifies they exist and refuses to start without them, and needs no CREATE ACL.
    kafka_create_topics: bool = Field(True, validation_alias="REFLEXE_KAFKA_CREATE_TOPICS")
    database_url: str = Field(
        "postgresql://reflexe:reflexe@127.0.0.1:15432/reflexe", validation_alias="DATABASE_URL"
    )
    # Locally each service migrates its schema at start. In production a Job runs the migrations
    # once per release (python -m reflexe_common.migrate); the pods only check that every
    # migration they know is applied, unchanged (db.py), and refuse to start otherwise.
    migrate_at_start: bool = Field(True, validation_alias="REFLEXE_MIGRATE_AT_START")
    # OpenID Connect: the one issuer whose tokens the service trusts. No default: a deployment
    # must name its identity provider, and a service without one refuses to start.
    oidc_issuer: str = Field(validation_alias="OIDC_ISSUER", min_length=1)
    oidc_audience: str = Field("reflexe", validation_alias="OIDC_AUDIENCE")
    # Where the issuer's keys are; by default read from its discovery document.
    oidc_jwks_url: str | None = Field(None, validation_alias="OIDC_JWKS_URL")
    oidc_max_token_lifetime_seconds: int = Field(3600, gt=0, validation_alias="OIDC_MAX_TOKEN_LIFETIME_SECONDS")
    # Claims that carry the caller's role (a dotted path into the token) and scope.
    auth_role_claim: str = Field("realm_access.roles", validation_alias="AUTH_ROLE_CLAIM")
    auth_finess_claim: str = Field("finess", validation_alias="AUTH_FINESS_CLAIM")
    auth_department_claim: str = Field("department", validation_alias="AUTH_DEPARTMENT_CLAIM")
    auth_region_claim: str = Field("region", validation_alias="AUTH_REGION_CLAIM")
    log_level: str = Field("INFO", validation_alias="LOG_LEVEL")
    http_host: str = Field("127.0.0.1", validation_alias="HTTP_HOST")
    # The instance name makes Kafka client ids and relay ownership readable in logs.
    instance: str = Field("local", validation_alias="INSTANCE")
