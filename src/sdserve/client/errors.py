"""Typed client errors: one class per kind of failure, each with the HTTP status and
the service's stable error ``type`` (the same strings as the API's error bodies)."""

from __future__ import annotations

from typing import Any


class SdserveClientError(Exception):
    """Anything the client raises on purpose."""


class APIConnectionError(SdserveClientError):
    """The service could not be reached (after the retries)."""


class WaitTimeout(SdserveClientError, TimeoutError):
    """``wait()`` ran out of time; the job goes on (poll it later)."""

    def __init__(self, job_id: str, status: str, timeout: float) -> None:
        super().__init__(f"job {job_id} still {status} after {timeout:g} s")
        self.job_id = job_id
        self.status = status


class ApiError(SdserveClientError):
    """An error response: ``status`` (HTTP), ``type`` (stable error type), ``message``,
    ``body`` (the whole error object), ``fields`` (validation problems)."""

    def __init__(
        self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        raw = body.get("error", {}) if isinstance(body, dict) else {}
        err: dict[str, Any] = raw if isinstance(raw, dict) else {"message": str(raw)}
        self.status = status
        self.type = str(err.get("type", "http_error"))
        self.message = str(err.get("message", body))
        self.body = err
        fields = err.get("fields")
        self.fields: list[dict[str, Any]] = fields if isinstance(fields, list) else []
        self.headers = headers or {}
        super().__init__(f"{status} {self.type}: {self.message}")


class BadRequestError(ApiError):
    """400 (e.g. ``content_policy_violation``)."""


class AuthenticationError(ApiError):
    """401: no key, or a wrong, revoked or expired one."""


class PermissionDeniedError(ApiError):
    """403: the key's role does not allow this."""


class NotFoundError(ApiError):
    """404."""


class ConflictError(ApiError):
    """409 (e.g. the job was canceled)."""


class PayloadTooLargeError(ApiError):
    """413."""


class InvalidRequestError(ApiError):
    """422: bad input; ``fields`` names each offending field and its limit."""


class RateLimitError(ApiError):
    """429 (after the retries, which honour Retry-After)."""


class ServerError(ApiError):
    """5xx (502/503/504 after the retries)."""


_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    422: InvalidRequestError,
    429: RateLimitError,
}


def error_for(status: int, body: dict[str, Any], headers: dict[str, str]) -> ApiError:
    cls = _BY_STATUS.get(status, ServerError if status >= 500 else ApiError)
    return cls(status, body, headers)
