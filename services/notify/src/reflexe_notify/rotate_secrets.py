"""python -m reflexe_notify.rotate_secrets: re-seal every webhook secret under the first key of
NOTIFY_SECRET_KEYS.

Rotating the key that seals webhook secrets at rest:
  1. put a new key first in NOTIFY_SECRET_KEYS, keeping the old one after it ("new,old"), and
     restart every notify process (they now seal with the new key and open with both);
  2. run this command once (DATABASE_URL and NOTIFY_SECRET_KEYS as the service has them);
  3. drop the old key from NOTIFY_SECRET_KEYS and restart.
It is not a startup task on purpose: a process still holding only the old key would no longer
open secrets re-sealed under the new one while a deployment rolls.
"""

from __future__ import annotations

import asyncio
import sys

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from reflexe_common.db import create_pool
from reflexe_notify.adapters.secret_box import SecretBox, SecretUnreadable, parse_keys
from reflexe_notify.entrypoints.app import SCHEMA
from reflexe_notify.service_layer.secret_keys import rotate_secret_keys


class RotationSettings(BaseSettings):
    """What the rotation needs of the service's environment (not its issuer, Kafka or ports)."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore", hide_input_in_errors=True)
    database_url: str = Field("postgresql://reflexe:reflexe@127.0.0.1:15432/reflexe", validation_alias="DATABASE_URL")
    secret_keys: SecretStr = Field(validation_alias="NOTIFY_SECRET_KEYS")

    @field_validator("secret_keys")
    @classmethod
    def _keys(cls, value: SecretStr) -> SecretStr:
        parse_keys(value.get_secret_value())
        return value


async def rotate(settings: RotationSettings) -> int:
    pool = await create_pool(settings.database_url, SCHEMA, max_size=2)
    try:
        return await rotate_secret_keys(pool, SecretBox(parse_keys(settings.secret_keys.get_secret_value())))
    finally:
        await pool.close()


def main() -> int:
    try:
        settings = RotationSettings()
    except ValidationError as exc:
        print(f"rotate_secrets: {exc}", file=sys.stderr)
        return 2
    try:
        count = asyncio.run(rotate(settings))
    except SecretUnreadable as exc:
        print(f"rotate_secrets: nothing changed: {exc}", file=sys.stderr)
        return 1
    print(f"{count} subscriptions' secrets re-sealed under the first key of NOTIFY_SECRET_KEYS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
