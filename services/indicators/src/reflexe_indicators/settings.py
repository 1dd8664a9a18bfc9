"""The indicators service's settings, read from the environment."""

from pydantic import Field

from reflexe_common.settings import ServiceSettings


class IndicatorsSettings(ServiceSettings):
    http_port: int = Field(8003, validation_alias="INDICATORS_HTTP_PORT")
