"""The indicators service's settings, read from the environment."""

from pydantic import Field

from reflexe_common.settings import ServiceSettings


class IndicatorsSettings(ServiceSettings):
    http_port: int = Field(8003, validation_alias="INDICATORS_HTTP_PORT")
    # A capacity declaration older than this is stale (declaration freshness indicator).
    stale_after_minutes: int = Field(720, validation_alias="INDICATORS_STALE_AFTER_MINUTES")
    # Replay: records per fetched batch (folded in memory, upserted in one statement per table);
    # two batches are in memory at once (one folded while the previous one is written).
    replay_batch: int = Field(5_000, validation_alias="INDICATORS_REPLAY_BATCH")
    # How often the Prometheus gauges of today's and this month's indicators are refreshed.
    metrics_refresh_seconds: float = Field(60, validation_alias="INDICATORS_METRICS_REFRESH_SECONDS")
