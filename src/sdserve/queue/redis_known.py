"""What a Redis transaction knows of a job record: the version it read (``Loaded``),
and the copies of running jobs this process last wrote (``KnownJobs``)."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass

from sdserve.domain.jobs import Job


@dataclass
class Loaded:
    """A record as read: its version guards the write that replaces it."""

    version: str  # '' = absent
    seq: int = 0  # place in line; -k: the k-th job this commit inserts (numbered then)


class KnownJobs:
    """The running jobs this process last wrote, with the version it wrote them at.

    A worker's next transition of a job it claimed (heartbeat, progress, complete,
    fail) decides from this copy instead of reading the job first, so it costs one
    round trip instead of two. Never trusted blindly: the commit still guards the
    version, so a copy that went stale (a cancel, a reclaim, another thread) fails the
    guard, is forgotten, and the transaction reads the job and decides again."""

    def __init__(self, capacity: int = 4096) -> None:
        self._capacity = capacity
        self._lock = threading.Lock()
        self._jobs: dict[str, tuple[Loaded, Job]] = {}

    def get(self, job_id: str) -> tuple[Loaded, Job] | None:
        with self._lock:
            return self._jobs.get(job_id)

    def remember(self, job_id: str, loaded: Loaded, job: Job) -> None:
        with self._lock:
            self._jobs.pop(job_id, None)
            if len(self._jobs) >= self._capacity:
                del self._jobs[next(iter(self._jobs))]  # the oldest written
            self._jobs[job_id] = (loaded, job)

    def forget(self, job_ids: Iterable[str]) -> None:
        with self._lock:
            for job_id in job_ids:
                self._jobs.pop(job_id, None)
