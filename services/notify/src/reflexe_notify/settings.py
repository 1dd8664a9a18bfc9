"""The notify service's settings, read from the environment."""

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from reflexe_common.settings import ServiceSettings
from reflexe_notify.adapters.secret_box import parse_keys
from reflexe_notify.domain.addresses import IPNetwork, parse_networks


class NotifySettings(ServiceSettings):
    # A refused setting is reported without its value: it may be a key or a password.
    model_config = SettingsConfigDict(hide_input_in_errors=True)

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

    # Where webhooks may go. NOTIFY_ALLOW_INSECURE_WEBHOOKS: accept plain http URLs (local
    # development only; https otherwise). NOTIFY_WEBHOOK_ALLOWED_NETWORKS: comma-separated networks
    # a webhook may reach although they are not public (e.g. "127.0.0.1/32" for local receivers);
    # empty by default, and never admitting a cloud metadata address.
    allow_insecure_webhooks: bool = Field(False, validation_alias="NOTIFY_ALLOW_INSECURE_WEBHOOKS")
    webhook_allowed_networks: str = Field("", validation_alias="NOTIFY_WEBHOOK_ALLOWED_NETWORKS")
    # NOTIFY_MAX_SUBSCRIPTIONS_PER_RECIPIENT: active subscriptions (webhooks and e-mails) one
    # recipient may hold: each one multiplies the deliveries of every event.
    max_subscriptions_per_recipient: int = Field(10, ge=1, validation_alias="NOTIFY_MAX_SUBSCRIPTIONS_PER_RECIPIENT")
    # NOTIFY_SECRET_KEYS: comma-separated Fernet keys sealing the webhook secrets at rest; the first
    # seals, all open (add a new key first, run `python -m reflexe_notify.rotate_secrets`, then drop
    # the old one). Required: no default a deployment could keep without knowing.
    secret_keys: SecretStr = Field(validation_alias="NOTIFY_SECRET_KEYS")

    # E-mail (SMTP; MSSanté in production). NOTIFY_SMTP_HOST / NOTIFY_SMTP_PORT: the relay.
    smtp_host: str = Field("127.0.0.1", validation_alias="NOTIFY_SMTP_HOST")
    smtp_port: int = Field(25, validation_alias="NOTIFY_SMTP_PORT")
    # NOTIFY_SMTP_FROM: the sender of every e-mail.
    smtp_from: str = Field("Réflexe <ne-pas-repondre@reflexe.invalid>", validation_alias="NOTIFY_SMTP_FROM")
    smtp_username: str | None = Field(None, validation_alias="NOTIFY_SMTP_USERNAME")
    smtp_password: str | None = Field(None, validation_alias="NOTIFY_SMTP_PASSWORD")
    # NOTIFY_SMTP_TLS: implicit TLS (port 465); NOTIFY_SMTP_STARTTLS: upgrade after connecting
    # (None: when the server offers it).
    smtp_tls: bool = Field(False, validation_alias="NOTIFY_SMTP_TLS")
    smtp_starttls: bool | None = Field(None, validation_alias="NOTIFY_SMTP_STARTTLS")

    # The desk page reads and steers through the other services' APIs, with the desk's token.
    referral_url: str = Field("http://127.0.0.1:8001", validation_alias="NOTIFY_REFERRAL_URL")
    capacity_url: str = Field("http://127.0.0.1:8002", validation_alias="NOTIFY_CAPACITY_URL")
    # NOTIFY_PUBLIC_URL: where people reach this service (links in e-mails); none by default.
    public_url: str | None = Field(None, validation_alias="NOTIFY_PUBLIC_URL")
    # NOTIFY_COOKIE_SECURE: mark the page cookies Secure even on localhost (they always are elsewhere).
    cookie_secure: bool = Field(False, validation_alias="NOTIFY_COOKIE_SECURE")
    # The pages log in at OIDC_ISSUER through this public client (authorization code with PKCE).
    oidc_client_id: str = Field("reflexe-web", validation_alias="NOTIFY_OIDC_CLIENT_ID")
    # NOTIFY_OIDC_DISCOVERY_URL: the provider's metadata as this server reaches it, when that differs
    # from the browser-facing issuer (compose: http://keycloak:8080/realms/reflexe/.well-known/...).
    oidc_discovery_url: str | None = Field(None, validation_alias="NOTIFY_OIDC_DISCOVERY_URL")
    # NOTIFY_SESSION_MAX_HOURS: a page session ends after this long even if kept active (a shift).
    session_max_hours: float = Field(12.0, gt=0, validation_alias="NOTIFY_SESSION_MAX_HOURS")
    # NOTIFY_DESK_STREAM_KEEP_DAYS: how long the live stream's entries are kept for resumption.
    desk_stream_keep_days: float = Field(7.0, gt=0, validation_alias="NOTIFY_DESK_STREAM_KEEP_DAYS")

    @field_validator("webhook_allowed_networks")
    @classmethod
    def _networks(cls, value: str) -> str:
        parse_networks(value)  # ValueError names the malformed network
        return value

    @field_validator("secret_keys")
    @classmethod
    def _keys(cls, value: SecretStr) -> SecretStr:
        parse_keys(value.get_secret_value())  # ValueError never quotes a key
        return value

    @property
    def allowed_networks(self) -> tuple[IPNetwork, ...]:
        return parse_networks(self.webhook_allowed_networks)

    @property
    def secret_key_list(self) -> list[str]:
        return parse_keys(self.secret_keys.get_secret_value())
