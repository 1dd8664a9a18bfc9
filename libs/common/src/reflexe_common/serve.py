"""Running a service's ASGI app with uvicorn: graceful shutdown, our JSON logging."""

from __future__ import annotations

from collections.abc import Callable

import uvicorn
from fastapi import FastAPI


def serve(build_app: Callable[..., FastAPI], settings) -> None:
    """settings: the service's settings object (http_host, http_port)."""
    uvicorn.run(build_app(settings), host=settings.http_host, port=settings.http_port, log_config=None,
                timeout_graceful_shutdown=10)
