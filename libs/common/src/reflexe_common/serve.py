"""Running a service's ASGI app with uvicorn: graceful shutdown, bounded in time, our JSON logging."""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable
from types import FrameType

import uvicorn
from fastapi import FastAPI

log = logging.getLogger(__name__)

# Open requests (and the desks' event streams) get this long to finish once a stop is asked.
GRACEFUL_HTTP_SECONDS = 3
# The last resort: a process still alive this long after SIGTERM/SIGINT exits anyway, so that a
# stop is always bounded (the steps of service.service_runtime's stop are bounded well below it).
STOP_DEADLINE_SECONDS = 15.0
EXIT_STOP_OVERRAN = 70  # EX_SOFTWARE


def _exit_now(seconds: float) -> None:
    log.error("stop did not finish in time; exiting", extra={"seconds": seconds})
    for handler in logging.getLogger().handlers:
        try:
            handler.flush()
        except Exception:  # a broken log handler must not keep the process alive
            pass
    os._exit(EXIT_STOP_OVERRAN)


class BoundedStopServer(uvicorn.Server):
    """uvicorn's server whose first stop signal also arms the deadline for the whole stop."""

    stop_deadline_seconds = STOP_DEADLINE_SECONDS

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if not self.should_exit:
            timer = threading.Timer(self.stop_deadline_seconds, _exit_now, (self.stop_deadline_seconds,))
            timer.daemon = True
            timer.start()
        super().handle_exit(sig, frame)


# Longer than any client's or proxy's idle pool (httpx keeps connections 5 s, an ingress about 60 s):
# a server that closes an idle connection first races a client reusing it, which then reads nothing.
KEEP_ALIVE_SECONDS = 75


def serve(build_app: Callable[..., FastAPI], settings) -> None:
    """settings: the service's settings object (http_host, http_port)."""
    config = uvicorn.Config(build_app(settings), host=settings.http_host, port=settings.http_port, log_config=None,
                            timeout_graceful_shutdown=GRACEFUL_HTTP_SECONDS, timeout_keep_alive=KEEP_ALIVE_SECONDS)
    server = BoundedStopServer(config)
    server.run()
    if not server.started:  # as uvicorn.run: a service that could not start (e.g. its port taken) fails
        sys.exit(3)
