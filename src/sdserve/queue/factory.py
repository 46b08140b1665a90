"""Pick the queue and wake-up backends from Settings (optional backends import lazily)."""

from __future__ import annotations

from typing import Literal

from sdserve.config import Settings
from sdserve.domain.errors import SdserveError
from sdserve.queue.base import JobQueue
from sdserve.queue.events import WakeupBus


class BackendUnavailable(SdserveError):
    type = "backend_unavailable"
    status = 503


def build_queue(settings: Settings) -> JobQueue:
    """A fresh queue. The memory backend lives in this process only: build it once
    and share the instance between the API and in-process workers."""
    backend = settings.queue_backend
    if backend == "memory":
        from sdserve.queue.memory import MemoryQueue

        return MemoryQueue(max_depth=settings.max_queue_depth)
    if backend == "sqlite":
        from sdserve.queue.sqlite import SqliteQueue

        path = settings.resolved_database_path
        path.parent.mkdir(parents=True, exist_ok=True)
        return SqliteQueue(
            path,
            max_depth=settings.max_queue_depth,
            synchronous="FULL" if settings.sqlite_synchronous == "full" else "NORMAL",
        )
    raise _unavailable(backend)


def build_wakeups(settings: Settings, role: Literal["api", "worker"]) -> WakeupBus:
    """The memory backend's bus is in-process (``role`` unused): share one instance
    between the API and its worker threads, as with the queue."""
    backend = settings.queue_backend
    if backend == "memory":
        from sdserve.queue.wakeups import LocalWakeupBus

        return LocalWakeupBus()
    if backend == "sqlite":
        from sdserve.queue.wakeups import SocketWakeupBus

        return SocketWakeupBus(settings.run_dir, role)
    raise _unavailable(backend)


def _unavailable(backend: str) -> BackendUnavailable:
    if backend == "redis":
        return BackendUnavailable(
            "redis backend not available yet; use SDSERVE_QUEUE_BACKEND=sqlite"
        )
    return BackendUnavailable(f"unknown queue backend {backend!r}")
