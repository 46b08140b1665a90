"""Names and small encodings of the Redis backend: key layout, the client, Redis's
clock, and the claim meta a queued job carries (see queue/redis_store.py for how the
records are written)."""

from __future__ import annotations

import functools
import json
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar, cast

import redis

from sdserve.domain.jobs import Job
from sdserve.queue.batching import Candidate
from sdserve.queue.factory import BackendUnavailable

# Queue score = rank * SEQ_SPAN + seq: exact in a double while seq < SEQ_SPAN.
SEQ_SPAN = 10**13
DEFAULT_PREFIX = "sdserve:"


def connect(url: str) -> redis.Redis:
    """A client for ``url`` (text replies; pooled connections, safe across threads).
    Timeouts: a Redis that stops answering (a partition, not a refused connection)
    must fail calls, not hang API requests and workers forever."""
    return redis.Redis.from_url(
        url,
        decode_responses=True,
        health_check_interval=30,
        socket_timeout=10.0,
        socket_connect_timeout=5.0,
        socket_keepalive=True,
    )


F = TypeVar("F", bound=Callable[..., Any])


def unavailable_as_503(method: F) -> F:
    """Redis unreachable (after redis-py's own retries): a 503 the client may retry,
    not a 500."""

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise BackendUnavailable(f"the job store (Redis) is unreachable: {exc}") from exc

    return cast(F, wrapper)


class RedisClock:
    """Redis's clock (TIME), so leases and timestamps agree across machines.

    TIME is read at most once per ``resync`` seconds and advanced with this machine's
    monotonic clock in between: the error is half a round trip plus clock drift over
    ``resync`` (microseconds), and the hot paths skip a round trip. Never goes back."""

    def __init__(self, client: redis.Redis, resync: float = 1.0) -> None:
        self._client = client
        self._resync = resync
        self._lock = threading.Lock()
        self._base = 0.0
        self._base_mono = -1e18
        self._last = 0.0

    def now(self) -> float:
        with self._lock:
            if time.monotonic() - self._base_mono > self._resync:
                before = time.monotonic()
                sec, usec = self._client.time()
                after = time.monotonic()
                self._base, self._base_mono = sec + usec / 1e6, (before + after) / 2
            self._last = max(self._last, self._base + time.monotonic() - self._base_mono)
            return self._last


class Keys:
    """Every key name, under one prefix (tests isolate themselves with their own)."""

    def __init__(self, prefix: str = DEFAULT_PREFIX) -> None:
        self.prefix = p = prefix
        self.seq = p + "seq"
        self.queued = p + "q"
        self.ready = p + "q:ready"
        self.delayed = p + "q:delayed"
        self.age = p + "q:age"
        self.leases = p + "leases"
        self.dead = p + "dead"
        self.idem = p + "idem"
        self.outbox_due = p + "obx:due"
        self.cancel = p + "cancel"

    @property
    def job_prefix(self) -> str:
        return self.prefix + "job:"

    def job(self, job_id: str) -> str:
        return self.prefix + "job:" + job_id

    def workflow(self, workflow_id: str) -> str:
        return self.prefix + "wf:" + workflow_id

    def outbox(self, entry_id: str) -> str:
        return self.prefix + "obx:" + entry_id

    def index(self, status: str = "*", priority: str = "*", owner: str | None = None) -> str:
        """A list_jobs index; the owner comes last so any owner string is unambiguous."""
        base = f"{self.prefix}ix:{status}:{priority}"
        return base if owner is None else f"{base}:{owner}"

    def job_indexes(self, job: Job, status_only: bool = False) -> list[str]:
        """The list indexes ``job`` is in; ``status_only``: those naming its status
        (the ones a status change moves it between)."""
        return [
            self.index(st, pr, ow)
            for st in ((job.status.value,) if status_only else (job.status.value, "*"))
            for pr in (job.spec.priority.value, "*")
            for ow in ((None, job.owner) if job.owner is not None else (None,))
        ]


def idem_field(kind: str, owner: str | None, key: str) -> str:
    return json.dumps([kind, owner, key])


def queue_score(rank: int, seq: int) -> int:
    return rank * SEQ_SPAN + seq


def rank_range(rank: int) -> tuple[int, int]:
    """Scores of the queued jobs of one priority (inclusive)."""
    return rank * SEQ_SPAN, (rank + 1) * SEQ_SPAN - 1


def claim_meta(job: Job) -> str:
    """What a claim needs to know about a queued job, without parsing the whole job."""
    return json.dumps(
        [
            job.spec.priority.rank,
            job.batch_key,
            job.num_images,
            job.created_at,
            job.solo,
            job.available_at,
            job.spec.model,
        ]
    )


def parse_candidate(job_id: str, meta: str) -> tuple[Candidate, float]:
    """(candidate, available_at) from a job's claim meta."""
    rank, batch_key, images, created, solo, available, model = json.loads(meta)
    return Candidate(job_id, rank, batch_key, images, created, bool(solo), model), available
