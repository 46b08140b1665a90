"""A webhook delivery never writes its callback URL (query-string token included) to
a log line: the HTTP client's own per-request INFO line is silenced."""

from __future__ import annotations

import io
import logging
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

from sdserve.observability.logs import configure_logging
from sdserve.webhooks.delivery import WebhookSender
from sdserve.webhooks.guard import AddressPolicy


class _Ok(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_delivery_logs_no_callback_url() -> None:
    server = HTTPServer(("127.0.0.1", 0), _Ok)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    stream = io.StringIO()
    try:
        configure_logging("DEBUG")
        root.handlers[0].setStream(stream)  # type: ignore[attr-defined]
        sender = WebhookSender(AddressPolicy(["127.0.0.1"]))
        url = f"http://127.0.0.1:{server.server_port}/hook?token=tok-SECRET-123"
        outcome = sender.send(url, b"{}", {"content-type": "application/json"})
        sender.close()
        assert outcome.ok
        logging.getLogger("sdserve.test").info("marker line")
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
        for noisy in ("httpx", "httpcore"):
            logging.getLogger(noisy).setLevel(logging.NOTSET)
        server.shutdown()
    text = stream.getvalue()
    assert "marker line" in text  # the capture works
    assert "tok-SECRET-123" not in text and "/hook" not in text
