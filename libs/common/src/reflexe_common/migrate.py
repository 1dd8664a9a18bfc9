"""Apply one service's migrations and exit: what the release's migration Job runs (deploy/k8s),
so that the services' pods do not migrate at start (REFLEXE_MIGRATE_AT_START=false).

    python -m reflexe_common.migrate referral

Reads DATABASE_URL (and PGPASSWORD when the URL has none), connecting as the service's own
database role, which owns its schema.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from reflexe_common.db import create_pool, migrate

# Each service's schema and the package of its numbered migrations.
SERVICE_MIGRATIONS = {
    "referral": "reflexe_referral.migrations",
    "capacity": "reflexe_capacity.migrations",
    "indicators": "reflexe_indicators.migrations",
    "notify": "reflexe_notify.migrations",
    "gateway": "reflexe_gateway.migrations",
}


async def run(database_url: str, schema: str) -> list[str]:
    pool = await create_pool(database_url, schema, min_size=1, max_size=1)
    try:
        return await migrate(pool, schema, SERVICE_MIGRATIONS[schema])
    finally:
        await pool.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reflexe_common.migrate", description=__doc__.split("\n\n")[0])
    parser.add_argument("service", choices=sorted(SERVICE_MIGRATIONS))
    args = parser.parse_args(argv)
    database_url = os.environ.get("DATABASE_URL")
    if not database_url:
        parser.error("DATABASE_URL is required")
    applied = asyncio.run(run(database_url, args.service))
    print(f"{args.service}: {len(applied)} migration(s) applied: {', '.join(applied) or 'none'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
