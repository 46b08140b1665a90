"""One error hierarchy and one table. Each class has a stable ``type`` string (also a
metric label); the HTTP status of every type comes from ``ERRORS`` and nowhere else, so
an error raised by a job (stored as its type) maps to the same status as one raised at
the edge. docs/errors.md lists the table; a test keeps the two in step."""

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


# Error type -> (HTTP status, what it means). Types raised outside this module (and the
# types a stored job error can carry) are here too: one place decides every status.
ERRORS: dict[str, tuple[int, str]] = {
    # the client's request
    "validation_error": (422, "a field is missing, of the wrong JSON type or out of range"),
    "payload_too_large": (413, "the request body is over the size limit"),
    "unsupported_media_type": (415, "the body is neither JSON nor multipart/form-data"),
    "not_found": (404, "no such job, image, workflow or route (or another tenant's)"),
    "method_not_allowed": (405, "the route exists but not with this HTTP method"),
    "http_error": (400, "the HTTP request itself is malformed"),
    "idempotency_conflict": (422, "an Idempotency-Key reused with a different body"),
    "conflict": (409, "the resource is not in a state that allows this"),
    "held_for_review": (409, "an image was flagged and the job is held for human review"),
    "canceled": (409, "the job was canceled before it finished"),
    "content_policy_violation": (400, "the prompt was refused by the content policy"),
    "unsafe_weights": (422, "a model in a pickle-based format (.ckpt/.bin/.pt) is refused"),
    "model_unavailable": (422, "the model named is present but broken (not loadable)"),
    "input_unavailable": (422, "an input image was deleted before the job ran"),
    "corrupt_input": (422, "a stored input image no longer reads back"),
    # identity and limits
    "unauthorized": (401, "no API key, or an unknown, revoked or expired one"),
    "forbidden": (403, "the key's role does not allow this"),
    "rate_limited": (429, "over a rate limit or quota; retry after Retry-After"),
    # the service
    "queue_full": (503, "too many queued jobs; retry later"),
    "not_ready": (503, "no worker is ready yet; retry later"),
    "backend_unavailable": (503, "the queue or key store cannot be reached"),
    "store_busy": (503, "the queue store lost every optimistic retry; retry"),
    "storage_unavailable": (503, "the blob store cannot be reached or is misconfigured"),
    "moderation_unavailable": (503, "the moderation check could not run; retry later"),
    "generation_timeout": (504, "the synchronous wait ran out; the job goes on"),
    "generation_failed": (500, "the engine failed on this job"),
    "out_of_memory": (503, "the accelerator ran out of memory even at batch size one"),
    "model_load_error": (500, "the worker could not load the model"),
    "lease_expired": (503, "the worker running the job was lost; retries ran out"),
    "configuration_error": (500, "the deployment is misconfigured (operator fix)"),
    "quarantine_error": (500, "a held image could not be sealed or opened in quarantine"),
    "seal_error": (500, "a sealed secret does not open under this server's key"),
    "internal_error": (500, "an unexpected failure (logged with its request id)"),
}


def status_for(error_type: str) -> int:
    """The HTTP status of an error type (an unknown type is a server error)."""
    entry = ERRORS.get(error_type)
    return entry[0] if entry is not None else 500


class SdserveError(Exception):
    type: str = "internal_error"
    retryable: bool = False

    @property
    def status(self) -> int:
        return status_for(self.type)

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


class NotFound(SdserveError):
    type = "not_found"


class IdempotencyConflict(SdserveError):
    type = "idempotency_conflict"


class Conflict(SdserveError):
    type = "conflict"


class QueueFull(SdserveError):
    type = "queue_full"
    retryable = True


class NotReady(SdserveError):
    type = "not_ready"
    retryable = True


class GenerationTimeout(SdserveError):
    """The synchronous wait ran out; the job goes on and can be polled."""

    type = "generation_timeout"


class Unauthorized(SdserveError):
    type = "unauthorized"


class Forbidden(SdserveError):
    type = "forbidden"


class RateLimited(SdserveError):
    type = "rate_limited"
    retryable = True
    # Retry-After and RateLimit-* for this refusal (api/quota.py fills them).
    headers: dict[str, str] | None = None


class ContentPolicyViolation(SdserveError):
    """A prompt refused by the content policy; details carry ``approved``,
    ``confidence``, ``categories`` (score per category) and ``reason``."""

    type = "content_policy_violation"


class ModerationUnavailable(SdserveError):
    """The moderation check could not run (service down, timeout) and the deployment
    fails closed: the prompt is neither approved nor refused, so retry later."""

    type = "moderation_unavailable"
    retryable = True


# --- errors raised while a job runs (stored on the job, not HTTP responses) ---


class GenerationFailed(SdserveError):
    type = "generation_failed"
    retryable = True


class OutOfMemory(GenerationFailed):
    """The accelerator ran out of memory; the worker splits the batch and retries."""

    type = "out_of_memory"


class ModelLoadError(SdserveError):
    type = "model_load_error"


class UnsafeWeights(ModelLoadError):
    """Refused: weights in a pickle-based format (.ckpt/.bin/.pt) are never loaded."""

    type = "unsafe_weights"


class ModelUnavailable(SdserveError):
    """A model present in the models folder but not whole (empty, truncated, corrupt,
    pickle-only): never offered, and a request naming it is told why."""

    type = "model_unavailable"


class JobCanceled(SdserveError):
    type = "canceled"


class CorruptInput(SdserveError):
    """A stored input image (written at submit) no longer reads back; retrying won't help."""

    type = "corrupt_input"


class LeaseExpired(SdserveError):
    type = "lease_expired"
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
