"""Log context carried with a request and with a job: request id, job id, tenant and
the W3C trace context, added to every log line (text or JSON).

One mutable dict per request lives in a context variable, so values set deep in a
route (the job id, once it exists) reach the edge's own log line too, whichever
thread or task wrote them."""

from __future__ import annotations

import logging
import re
import secrets
from contextvars import ContextVar
from typing import Any

from sdserve.domain.requests import TraceContext

FIELDS = ("request_id", "job_id", "tenant", "trace_id", "traceparent")
_current: ContextVar[dict[str, str] | None] = ContextVar("sdserve_log_context", default=None)

# A client's X-Request-ID is kept when it is short and plain; anything else (control
# characters, quotes, HTML, 10 kB) is replaced, so a log line can trust it.
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:@+=/-]{1,128}")
_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")


def sane_request_id(value: str | None) -> str:
    if value is not None and _SANE_REQUEST_ID.fullmatch(value):
        return value
    return secrets.token_hex(16)


def valid_traceparent(value: str | None) -> str | None:
    """A version-00 W3C traceparent, or None (all-zero ids are invalid by the spec)."""
    if value is None:
        return None
    match = _TRACEPARENT.fullmatch(value.strip())
    if match is None or set(match[1]) == {"0"} or set(match[2]) == {"0"}:
        return None
    return match[0]


def trace_id(traceparent: str | None) -> str | None:
    return traceparent.split("-")[1] if traceparent else None


def start(**values: str | None) -> tuple[dict[str, str], object]:
    """A fresh context for one request; returns it and the token to reset."""
    ctx = {k: v for k, v in values.items() if v}
    return ctx, _current.set(ctx)


def reset(token: object) -> None:
    _current.reset(token)  # type: ignore[arg-type]


def current() -> dict[str, str]:
    return _current.get() or {}


def bind(**values: str | None) -> None:
    """Add fields to the current request's context (no-op outside a request)."""
    ctx = _current.get()
    if ctx is not None:
        ctx.update({k: v for k, v in values.items() if v})


def job_fields(job: Any) -> dict[str, str]:
    """Log fields of a job: its id, tenant and the trace it was submitted under."""
    out = {"job_id": str(job.id)}
    if getattr(job, "owner", None):
        out["tenant"] = str(job.owner)
    trace = getattr(job.spec, "trace", None)
    if trace is not None:
        if trace.request_id:
            out["request_id"] = trace.request_id
        if trace.traceparent:
            out["traceparent"] = trace.traceparent
            out["trace_id"] = trace.traceparent.split("-")[1]
    return out


def log_job(logger: logging.Logger, job: Any, message: str, *args: Any) -> None:
    """An INFO line about ``job`` carrying its request id and trace (worker side)."""
    logger.info(message, *args, extra=job_fields(job))


class ContextFilter(logging.Filter):
    """Copies the current context onto each record (fields already on it win)."""

    def filter(self, record: logging.LogRecord) -> bool:
        ctx = current()
        for name in FIELDS:
            if not hasattr(record, name):
                setattr(record, name, ctx.get(name))
        return True


def request_trace() -> TraceContext | None:
    """The current request's id and traceparent, as a job spec stores them."""
    ctx = current()
    if not ctx.get("request_id") and not ctx.get("traceparent"):
        return None
    return TraceContext(request_id=ctx.get("request_id"), traceparent=ctx.get("traceparent"))
