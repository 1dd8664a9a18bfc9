"""The notify service's settings, read from the environment."""

from pydantic import Field

from reflexe_common.settings import ServiceSettings


class NotifySettings(ServiceSettings):
    # NOTIFY_HTTP_PORT: port of the subscriptions / delivery-log API.
    http_port: int = Field(8004, validation_alias="NOTIFY_HTTP_PORT")
    # NOTIFY_MAX_ATTEMPTS: attempts of one delivery before it is FAILED (and the desk told).
    max_attempts: int = Field(8, ge=1, validation_alias="NOTIFY_MAX_ATTEMPTS")
    # NOTIFY_BACKOFF_BASE_SECONDS: ceiling of the first retry's delay; doubles on each attempt.
    backoff_base_seconds: float = Field(1.0, gt=0, validation_alias="NOTIFY_BACKOFF_BASE_SECONDS")
    # NOTIFY_BACKOFF_MAX_SECONDS: cap of the delay ceiling (the delay is drawn in [0, ceiling]).
    backoff_max_seconds: float = Field(300.0, gt=0, validation_alias="NOTIFY_BACKOFF_MAX_SECONDS")
    # NOTIFY_TIMEOUT_SECONDS: total time allowed to one HTTP attempt, connect to response.
    timeout_seconds: float = Field(5.0, gt=0, validation_alias="NOTIFY_TIMEOUT_SECONDS")
    # NOTIFY_CONCURRENCY: webhooks in flight at once per process.
    concurrency: int = Field(16, ge=1, validation_alias="NOTIFY_CONCURRENCY")
    # NOTIFY_IDLE_POLL_SECONDS: longest sleep of the dispatcher between looks at the table
    # (new deliveries wake it at once through LISTEN/NOTIFY; this is the fallback).
    idle_poll_seconds: float = Field(1.0, gt=0, validation_alias="NOTIFY_IDLE_POLL_SECONDS")
