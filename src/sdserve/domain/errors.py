"""One error hierarchy. Each class has a stable ``type`` string (also a metric label)
and the HTTP status the API maps it to; nothing else decides status codes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class FieldProblem:
    """One invalid input field: where it is, what is wrong, and the limit it broke."""

    field: str
    message: str
    limit: Any = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"field": self.field, "message": self.message}
        if self.limit is not None:
            out["limit"] = self.limit
        return out


class SdserveError(Exception):
    type: str = "internal_error"
    status: int = 500
    retryable: bool = False

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type, "message": self.message}
        out.update(self.details)
        return out


class InvalidRequest(SdserveError):
    """Bad input, caught at the edge; carries one entry per offending field."""

    type = "validation_error"
    status = 422

    def __init__(self, problems: list[FieldProblem]) -> None:
        text = "; ".join(f"{p.field}: {p.message}" for p in problems)
        super().__init__(text or "invalid request")
        self.problems = problems

    def as_dict(self) -> dict[str, Any]:
        out = super().as_dict()
        out["fields"] = [p.as_dict() for p in self.problems]
        return out

    @classmethod
    def single(cls, field_name: str, message: str, limit: Any = None) -> InvalidRequest:
        return cls([FieldProblem(field_name, message, limit)])


class PayloadTooLarge(SdserveError):
    type = "payload_too_large"
    status = 413


class NotFound(SdserveError):
    type = "not_found"
    status = 404


class IdempotencyConflict(SdserveError):
    type = "idempotency_conflict"
    status = 422


class Conflict(SdserveError):
    type = "conflict"
    status = 409


class QueueFull(SdserveError):
    type = "queue_full"
    status = 503
    retryable = True


class NotReady(SdserveError):
    type = "not_ready"
    status = 503
    retryable = True


class GenerationTimeout(SdserveError):
    """The synchronous wait ran out; the job goes on and can be polled."""

    type = "generation_timeout"
    status = 504


class Unauthorized(SdserveError):
    type = "unauthorized"
    status = 401


class Forbidden(SdserveError):
    type = "forbidden"
    status = 403


class RateLimited(SdserveError):
    type = "rate_limited"
    status = 429
    retryable = True
    # Retry-After and RateLimit-* for this refusal (api/quota.py fills them).
    headers: dict[str, str] | None = None


class ContentPolicyViolation(SdserveError):
    """A prompt refused by the content policy; details carry ``approved``,
    ``confidence``, ``categories`` (score per category) and ``reason``."""

    type = "content_policy_violation"
    status = 400


class ModerationUnavailable(SdserveError):
    """The moderation check could not run (service down, timeout) and the deployment
    fails closed: the prompt is neither approved nor refused, so retry later."""

    type = "moderation_unavailable"
    status = 503
    retryable = True


# --- errors raised while a job runs (stored on the job, not HTTP responses) ---


class GenerationFailed(SdserveError):
    type = "generation_failed"
    status = 500
    retryable = True


class OutOfMemory(GenerationFailed):
    """The accelerator ran out of memory; the worker splits the batch and retries."""

    type = "out_of_memory"


class ModelLoadError(SdserveError):
    type = "model_load_error"
    status = 500


class UnsafeWeights(ModelLoadError):
    """Refused: weights in a pickle-based format (.ckpt/.bin/.pt) are never loaded."""

    type = "unsafe_weights"
    status = 422


class JobCanceled(SdserveError):
    type = "canceled"
    status = 409


class CorruptInput(SdserveError):
    """A stored input image (written at submit) no longer reads back; retrying won't help."""

    type = "corrupt_input"
    status = 500


class LeaseExpired(SdserveError):
    type = "lease_expired"
    status = 500
    retryable = True


@dataclass
class ErrorInfo:
    """An error as stored on a job and shown to clients."""

    type: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_exception(cls, exc: BaseException) -> ErrorInfo:
        if isinstance(exc, SdserveError):
            return cls(exc.type, exc.message)
        return cls("internal_error", f"{type(exc).__name__}: {exc}")
