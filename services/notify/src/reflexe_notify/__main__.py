"""python -m reflexe_notify: run the notify service."""

import uvicorn

from reflexe_notify.entrypoints.app import build_app
from reflexe_notify.settings import NotifySettings


def main() -> None:
    settings = NotifySettings()
    uvicorn.run(build_app(settings), host=settings.http_host, port=settings.http_port, log_config=None,
                timeout_graceful_shutdown=10)


if __name__ == "__main__":
    main()
