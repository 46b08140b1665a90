"""The edge of every HTTP request: a request id (the client's X-Request-ID when sane,
else a new one) on the response and on every log line written while handling it, the
W3C ``traceparent`` taken in, one access line per request, and CORS when configured
(off by default: no origin is allowed unless listed)."""

from __future__ import annotations

import logging
import time

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sdserve.config import Settings
from sdserve.observability import context

log = logging.getLogger("sdserve.http")


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.lower(): v for k, v in scope.get("headers") or []}
        raw_id = headers.get(b"x-request-id")
        request_id = context.sane_request_id(raw_id.decode("latin-1") if raw_id else None)
        raw_tp = headers.get(b"traceparent")
        traceparent = context.valid_traceparent(raw_tp.decode("latin-1") if raw_tp else None)
        ctx, token = context.start(
            request_id=request_id,
            traceparent=traceparent,
            trace_id=context.trace_id(traceparent),
        )
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                out = [(k, v) for k, v in message.get("headers", []) if k != b"x-request-id"]
                out.append((b"x-request-id", request_id.encode()))
                message["headers"] = out
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            log.info(
                "%s %s -> %d (%.1f ms)",
                scope.get("method"),
                scope.get("path"),
                status,
                (time.perf_counter() - started) * 1000,
                extra=dict(ctx),
            )
            context.reset(token)


def install_edge(app: FastAPI, settings: Settings) -> None:
    """Outermost layers: added last, so they wrap the error handlers, body limit and
    metrics (a 413 or a 500 still carries its request id)."""
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "PUT", "DELETE"],
            allow_headers=["authorization", "content-type", "idempotency-key", "x-request-id"],
            expose_headers=["x-request-id", "location", "retry-after"],
        )
    app.add_middleware(RequestContextMiddleware)


def uvicorn_tls(settings: Settings) -> dict[str, str]:
    """uvicorn's certificate settings, when TLS is configured."""
    if settings.ssl_certfile is None:
        return {}
    out = {"ssl_certfile": str(settings.ssl_certfile)}
    if settings.ssl_keyfile is not None:
        out["ssl_keyfile"] = str(settings.ssl_keyfile)
    return out
