"""What the compatibility facades (OpenAI, AUTOMATIC1111) share: one description of
any error, taken from the one error hierarchy, that each facade renders in its own
envelope; field renaming (a facade's client names fields its own way); and a route
class that sends every error raised by a facade route through its renderer.

The native API keeps its handlers in api/errors.py; a facade route catches its errors
itself so the same exception reads as ``{"error": {"message", "type", "param",
"code"}}`` to an OpenAI client and as ``{"error", "detail", ...}`` to an A1111 one.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException

from sdserve.api.errors import problems_from_pydantic
from sdserve.domain.errors import FieldProblem, InvalidRequest, SdserveError

log = logging.getLogger("sdserve.api")

_HTTP_TYPES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}


@dataclass(frozen=True)
class ErrorFacts:
    """Any error, described once: what each facade renders in its own envelope."""

    status: int
    type: str
    message: str
    problems: list[FieldProblem] = field(default_factory=list)
    retryable: bool = False
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def param(self) -> str | None:
        """The first offending field, as the client named it."""
        return self.problems[0].field if self.problems else None


def describe(exc: BaseException) -> ErrorFacts:
    if isinstance(exc, RequestValidationError):
        exc = InvalidRequest(problems_from_pydantic(list(exc.errors())))
    if isinstance(exc, SdserveError):
        problems = exc.problems if isinstance(exc, InvalidRequest) else []
        return ErrorFacts(
            exc.status, exc.type, exc.message, problems, exc.retryable, dict(exc.details)
        )
    if isinstance(exc, StarletteHTTPException):
        err_type = _HTTP_TYPES.get(exc.status_code, "http_error")
        return ErrorFacts(exc.status_code, err_type, str(exc.detail))
    return ErrorFacts(500, "internal_error", "internal error")


def renamed(exc: InvalidRequest, names: dict[str, str]) -> InvalidRequest:
    """The same problems with native field names replaced by the facade's names."""
    problems = [FieldProblem(names.get(p.field, p.field), p.message, p.limit) for p in exc.problems]
    return InvalidRequest(problems)


Renderer = Callable[[Request, ErrorFacts], Response]


def facade_route(render: Renderer) -> type[APIRoute]:
    """An APIRoute class whose errors (auth, validation, the job core's own) are
    rendered by ``render`` instead of the native handlers."""

    class FacadeRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler: Callable[[Request], Awaitable[Response]] = super().get_route_handler()

            async def guarded(request: Request) -> Response:
                try:
                    return await handler(request)
                except Exception as exc:
                    facts = describe(exc)
                    if facts.status >= 500:
                        if facts.type == "internal_error":
                            log.exception("unhandled error in %s", request.url.path)
                        else:
                            log.warning("request failed: %s: %s", facts.type, facts.message)
                    _count(request, facts.type)
                    return render(request, facts)

            return guarded

    return FacadeRoute


def _count(request: Request, err_type: str) -> None:
    services = getattr(request.app.state, "services", None)
    if services is not None:
        services.metrics.errors.labels(err_type).inc()


def retry_headers(facts: ErrorFacts) -> dict[str, str]:
    headers = {"Retry-After": "1"} if facts.retryable else {}
    if facts.type == "unauthorized":
        headers["WWW-Authenticate"] = 'Bearer realm="sdserve", Basic realm="sdserve"'
    return headers
