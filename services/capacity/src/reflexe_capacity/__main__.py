"""python -m reflexe_capacity: run the capacity service."""

import uvicorn

from reflexe_capacity.entrypoints.app import build_app
from reflexe_capacity.settings import CapacitySettings


def main() -> None:
    settings = CapacitySettings()
    uvicorn.run(build_app(settings), host=settings.http_host, port=settings.http_port, log_config=None,
                timeout_graceful_shutdown=10)


if __name__ == "__main__":
    main()
