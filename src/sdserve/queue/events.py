"""Wake-ups between API processes and workers, so nobody waits on a poll interval.

The job store stays the source of truth: a lost wake-up only costs latency (both sides
still poll at ``poll_interval``), never correctness.
"""

from __future__ import annotations

from typing import Protocol


class WakeupBus(Protocol):
    def notify_workers(self) -> None:
        """A job became claimable (enqueued, requeued, released)."""
        ...

    def wait_for_work(self, timeout: float) -> bool:
        """Worker side, blocking: return True on a wake-up, False on timeout."""
        ...

    def notify_job(self, job_id: str) -> None:
        """A job changed (progress, terminal state, cancel request)."""
        ...

    async def wait_job(self, job_id: str, timeout: float) -> bool:
        """API side: return True when ``notify_job(job_id)`` arrives, False on timeout."""
        ...

    def close(self) -> None: ...
