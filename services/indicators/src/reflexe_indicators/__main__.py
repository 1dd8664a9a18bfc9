"""python -m reflexe_indicators: run the indicators service."""

import uvicorn

from reflexe_indicators.entrypoints.app import build_app
from reflexe_indicators.settings import IndicatorsSettings


def main() -> None:
    settings = IndicatorsSettings()
    uvicorn.run(build_app(settings), host=settings.http_host, port=settings.http_port, log_config=None,
                timeout_graceful_shutdown=10)


if __name__ == "__main__":
    main()
