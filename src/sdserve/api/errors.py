"""Map the error hierarchy (and framework validation errors) to HTTP in one place."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from sdserve.domain.errors import FieldProblem, InvalidRequest, SdserveError, Unauthorized

log = logging.getLogger("sdserve.api")

_LIMIT_KEYS = ("le", "ge", "lt", "gt", "max_length", "min_length", "limit")


def error_body(exc: SdserveError) -> dict[str, Any]:
    return {"error": exc.as_dict()}


def problems_from_pydantic(errors: list[dict[str, Any]]) -> list[FieldProblem]:
    """Pydantic errors -> one FieldProblem per field, named as the client sent it."""
    out: list[FieldProblem] = []
    for err in errors:
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path")]
        name = ".".join(loc) or "body"
        ctx = err.get("ctx") or {}
        limit = next((ctx[k] for k in _LIMIT_KEYS if k in ctx), None)
        message = str(err.get("msg", "invalid value"))
        if message.startswith("Value error, "):
            message = message[len("Value error, ") :]
        if err.get("type") == "extra_forbidden":
            message = "unknown field"
        if err.get("type") == "json_invalid":
            name, message = "body", "request body is not valid JSON"
        out.append(FieldProblem(name, message, limit if _jsonable(limit) else str(limit)))
    return out


def _jsonable(value: Any) -> bool:
    return value is None or isinstance(value, (int, float, str, bool))


def _count(request: Request, err_type: str) -> None:
    services = getattr(request.app.state, "services", None)
    if services is not None:
        services.metrics.errors.labels(err_type).inc()


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(SdserveError)
    async def _sdserve(request: Request, exc: SdserveError) -> JSONResponse:
        _count(request, exc.type)
        if exc.status >= 500:
            log.warning("request failed: %s: %s", exc.type, exc.message)
        headers = {"Retry-After": "1"} if exc.retryable else {}
        headers.update(getattr(exc, "headers", None) or {})
        if isinstance(exc, Unauthorized):
            headers["WWW-Authenticate"] = 'Bearer realm="sdserve"'
        return JSONResponse(error_body(exc), status_code=exc.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        err = InvalidRequest(problems_from_pydantic(list(exc.errors())))
        _count(request, err.type)
        return JSONResponse(error_body(err), status_code=err.status)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}
        err_type = kind.get(exc.status_code, "http_error")
        _count(request, err_type)
        body = {"error": {"type": err_type, "message": str(exc.detail)}}
        return JSONResponse(body, status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        _count(request, "internal_error")
        body = {"error": {"type": "internal_error", "message": "internal error"}}
        return JSONResponse(body, status_code=500)
