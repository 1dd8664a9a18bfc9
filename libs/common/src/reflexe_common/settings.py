"""Configuration: one frozen pydantic-settings object per service, read from the environment."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    """Settings every service shares; each service subclasses it with its own fields."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore")

    kafka_bootstrap: str = Field("127.0.0.1:19092", validation_alias="KAFKA_BOOTSTRAP")
    database_url: str = Field(
        "postgresql://reflexe:reflexe@127.0.0.1:15432/reflexe", validation_alias="DATABASE_URL"
    )
    jwt_secret: str = Field("dev-only-secret-change-me-0123456789abcdef", validation_alias="JWT_SECRET")
    log_level: str = Field("INFO", validation_alias="LOG_LEVEL")
    http_host: str = Field("127.0.0.1", validation_alias="HTTP_HOST")
    # The instance name makes Kafka client ids and relay ownership readable in logs.
    instance: str = Field("local", validation_alias="INSTANCE")
