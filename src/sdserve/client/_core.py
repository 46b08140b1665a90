"""What the sync and async clients share: configuration, which failures are retried
and after how long, idempotency keys, error parsing and response decoding. No I/O
here: each client runs the same decisions with its own httpx client and sleep."""

from __future__ import annotations

import base64
import email.utils
import os
import random
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx

from sdserve import __version__
from sdserve.client.errors import ApiError, error_for

# Where wait() stops: the job ended, or is held for review (a person decides that,
# so waiting longer would not help).
TERMINAL = frozenset({"succeeded", "failed", "canceled", "held"})
# Retried: the service is overloaded or a proxy could not reach it; nothing else (a
# 500 or a 4xx would fail again the same way).
RETRY_STATUS = frozenset({429, 502, 503, 504})
# Retried transport failures: the request never reached the service. (A read timeout
# is not retried: the service may be working on it; use submit() + wait() for long jobs.)
RETRY_ERRORS: tuple[type[Exception], ...] = (httpx.ConnectError, httpx.ConnectTimeout)
DEFAULT_TIMEOUT = httpx.Timeout(300.0, connect=10.0)


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential back-off with jitter: attempt n waits between half and all of
    ``min(max_backoff, backoff * 2**n)``; a 429/503 with Retry-After waits exactly
    that long (up to ``max_retry_after``; longer: the error is raised)."""

    max_retries: int = 3
    backoff: float = 0.5
    max_backoff: float = 8.0
    max_retry_after: float = 60.0

    def backoff_delay(self, attempt: int, rng: random.Random) -> float:
        ceiling = min(self.max_backoff, self.backoff * 2.0**attempt)
        return float(ceiling / 2 + rng.uniform(0, ceiling / 2))


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Retry-After as seconds: a number of seconds or an HTTP date."""
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


@dataclass
class Core:
    base_url: str
    api_key: str | None
    timeout: httpx.Timeout
    retry: RetryPolicy
    rng: random.Random = field(default_factory=random.Random)

    @classmethod
    def build(
        cls,
        base_url: str,
        api_key: str | None,
        timeout: float | httpx.Timeout | None,
        retries: int,
        backoff: float,
    ) -> Core:
        key = api_key if api_key is not None else os.environ.get("SDSERVE_API_KEY")
        if timeout is None:
            tmo = DEFAULT_TIMEOUT
        elif isinstance(timeout, httpx.Timeout):
            tmo = timeout
        else:
            tmo = httpx.Timeout(timeout, connect=min(10.0, timeout))
        return cls(base_url.rstrip("/"), key, tmo, RetryPolicy(retries, backoff))

    def client_args(self) -> dict[str, Any]:
        headers = {"User-Agent": f"sdserve-client/{__version__}"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return {"base_url": self.base_url, "timeout": self.timeout, "headers": headers}

    @staticmethod
    def headers_for(method: str, idempotency_key: str | None) -> dict[str, str]:
        """Every POST carries an idempotency key (one per call, the same on each of
        its retries), so a retry never creates a second job or image."""
        if method.upper() != "POST":
            return {}
        return {"Idempotency-Key": idempotency_key or uuid.uuid4().hex}

    def delay_after(
        self, attempt: int, response: httpx.Response | None, error: Exception | None
    ) -> float | None:
        """Seconds to wait before retrying, or None: do not retry."""
        if attempt >= self.retry.max_retries:
            return None
        if error is not None:
            if isinstance(error, RETRY_ERRORS):
                return self.retry.backoff_delay(attempt, self.rng)
            return None
        assert response is not None
        if response.status_code not in RETRY_STATUS:
            return None
        after = retry_after_seconds(response.headers.get("retry-after"))
        if after is not None:
            return after if after <= self.retry.max_retry_after else None
        return self.retry.backoff_delay(attempt, self.rng)

    @staticmethod
    def check(response: httpx.Response) -> httpx.Response:
        if response.status_code >= 400:
            raise error_of(response)
        return response

    def is_service_url(self, target: str) -> bool:
        """Whether ``target`` is on this service (only there does the key go)."""
        url, base = httpx.URL(target), httpx.URL(self.base_url)
        if not url.is_absolute_url:
            return True
        return (url.scheme, url.host, url.port) == (base.scheme, base.host, base.port)


def error_of(response: httpx.Response) -> ApiError:
    try:
        body = response.json()
    except ValueError:
        body = {"error": {"type": "http_error", "message": response.text[:500]}}
    if not isinstance(body, dict):
        body = {"error": {"message": str(body)}}
    return error_for(response.status_code, body, dict(response.headers))


def with_image_bytes(out: dict[str, Any]) -> dict[str, Any]:
    out["image_bytes"] = [base64.b64decode(b) for b in out["images"]]
    return out


def image_path(image_id_or_url: str) -> str:
    return image_id_or_url if "/" in image_id_or_url else f"/v1/images/{image_id_or_url}"
