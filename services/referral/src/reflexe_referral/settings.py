"""The referral service's settings, read from the environment."""

from pydantic import Field

from reflexe_common.settings import ServiceSettings


class ReferralSettings(ServiceSettings):
    http_port: int = Field(8001, validation_alias="REFERRAL_HTTP_PORT")
    # Minutes after an offer with no answer before the HAD is reminded and the desk alerted.
    offer_unanswered_minutes: float = Field(15, validation_alias="REFERRAL_OFFER_UNANSWERED_MINUTES")
    clock_poll_seconds: float = Field(0.5, validation_alias="REFERRAL_CLOCK_POLL_SECONDS")
