"""SIGTERM for the API: stop accepting, let waiting clients finish, exit 0.

uvicorn re-raises a captured SIGTERM after its own shutdown, so the process dies by
the signal (exit 143) and nothing after ``run()`` — stopping the supervised workers,
releasing the data dir — ever runs. Here the signal starts a drain instead: new
connections are refused, each waiting ``/v1/generate`` answers with its result or,
at ``api_drain_seconds``, a 503 ``shutting_down`` in the usual error shape, and
``run()`` returns normally.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Generator
from contextlib import contextmanager
from types import FrameType

import uvicorn

from sdserve.api.services import Services
from sdserve.config import Settings

log = logging.getLogger("sdserve.serve")
# Room after the drain deadline for the 503s to be written before uvicorn cancels tasks.
_ANSWER_MARGIN_S = 2.0


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, services: Services, drain_s: float) -> None:
        super().__init__(config)
        self.services = services
        self.drain_s = drain_s

    @classmethod
    def for_services(cls, settings: Settings, services: Services) -> DrainingServer:
        from sdserve.api.app import create_app
        from sdserve.api.edge import uvicorn_tls

        config = uvicorn.Config(
            create_app(services),
            host=settings.host,
            port=settings.port,
            log_level=settings.log_level.lower(),
            access_log=False,
            timeout_graceful_shutdown=int(settings.api_drain_seconds + _ANSWER_MARGIN_S) + 1,
            **uvicorn_tls(settings),  # type: ignore[arg-type]
        )
        return cls(config, services, settings.api_drain_seconds)

    def begin_drain(self) -> None:
        if self.services.drain_deadline is None:
            log.info("shutting down: draining for up to %.0fs", self.drain_s)
            self.services.drain_deadline = time.monotonic() + self.drain_s
        self.should_exit = True

    @contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def on_signal(sig: int, frame: FrameType | None) -> None:
            if self.should_exit and sig == signal.SIGINT:
                self.force_exit = True  # a second Ctrl-C: stop waiting
            self.begin_drain()

        handled = (signal.SIGTERM, signal.SIGINT)
        original = {sig: signal.signal(sig, on_signal) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)
        # Unlike uvicorn's own: the signal is not raised again, so the caller goes on
        # to stop its workers and returns (exit 0).
