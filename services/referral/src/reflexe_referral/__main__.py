"""python -m reflexe_referral: run the referral service."""

import uvicorn

from reflexe_referral.entrypoints.app import build_app
from reflexe_referral.settings import ReferralSettings


def main() -> None:
    settings = ReferralSettings()
    uvicorn.run(build_app(settings), host=settings.http_host, port=settings.http_port, log_config=None,
                timeout_graceful_shutdown=10)


if __name__ == "__main__":
    main()
