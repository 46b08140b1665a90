"""Logging setup: human lines by default, JSON lines for log shippers."""

from __future__ import annotations

import json
import logging
import sys
import time

from sdserve.observability.context import FIELDS, ContextFilter


class TextFormatter(logging.Formatter):
    """The human format, with the request/job context appended when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        tags = [
            f"{short}={getattr(record, name)}"
            for name, short in (("request_id", "rid"), ("job_id", "job"), ("tenant", "tenant"))
            if getattr(record, name, None)
        ]
        return f"{line} [{' '.join(tags)}]" if tags else line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": round(time.time(), 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for name in FIELDS:
            value = getattr(record, name, None)
            if value:
                out[name] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out)


def configure_logging(level: str = "INFO", as_json: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if as_json:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            TextFormatter("%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s")
        )
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # The HTTP client logs every request's full URL at INFO; webhook URLs may carry
    # the receiver's token in their query string, so those lines never reach a log.
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
