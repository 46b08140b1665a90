"""A worker's own small HTTP endpoint: /healthz, /readyz and /metrics.

Workers have no web framework (and need none): a threading stdlib server on
``SDSERVE_WORKER_METRICS_PORT`` is enough for probes and Prometheus scrapes.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = logging.getLogger("sdserve.worker")


class WorkerHttp:
    """``alive``: the loop has not wedged; ``ready``: a model is loaded and the worker
    is not draining (Kubernetes stops sending it nothing; it only takes from the queue,
    but readiness gates rollouts and the PodDisruptionBudget)."""

    def __init__(
        self,
        registry: CollectorRegistry,
        ready: Callable[[], bool],
        alive: Callable[[], bool] = lambda: True,
        host: str = "0.0.0.0",
        port: int = 9100,
    ) -> None:
        self.registry = registry
        self.ready = ready
        self.alive = alive
        self._server = ThreadingHTTPServer((host, port), self._handler())
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="worker-http", daemon=True
        )

    def start(self) -> WorkerHttp:
        self._thread.start()
        log.info("worker health and metrics on port %d", self.port)
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, generate_latest(outer.registry), CONTENT_TYPE_LATEST)
                elif path == "/healthz":
                    ok = outer.alive()
                    self._json(200 if ok else 503, {"status": "ok" if ok else "stuck"})
                elif path == "/readyz":
                    ok = outer.ready()
                    self._json(200 if ok else 503, {"ready": ok})
                else:
                    self._json(404, {"error": {"type": "not_found", "message": "no such path"}})

            def _json(self, status: int, body: object) -> None:
                self._send(status, json.dumps(body).encode(), "application/json")

            def _send(self, status: int, data: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:
                pass  # probes every few seconds would flood the log

        return Handler
