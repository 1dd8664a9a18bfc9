"""The capacity service's settings, read from the environment."""

from pydantic import Field

from reflexe_common.settings import ServiceSettings


class CapacitySettings(ServiceSettings):
    http_port: int = Field(8002, validation_alias="CAPACITY_HTTP_PORT")
    hold_minutes_within_24h: float = Field(30, validation_alias="CAPACITY_HOLD_MINUTES_WITHIN_24H")
    hold_minutes_planned: float = Field(240, validation_alias="CAPACITY_HOLD_MINUTES_PLANNED")
    # A declaration older than this is stale, and shown as such everywhere.
    stale_after_minutes: float = Field(720, validation_alias="CAPACITY_STALE_AFTER_MINUTES")
