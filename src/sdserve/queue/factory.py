"""Pick the queue and wake-up backends from Settings (optional backends import lazily)."""

from __future__ import annotations

from typing import Literal

from sdserve.config import Settings
from sdserve.domain.errors import SdserveError
from sdserve.queue.base import JobQueue
from sdserve.queue.events import WakeupBus


class BackendUnavailable(SdserveError):
    type = "backend_unavailable"


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
    if backend == "redis":
        _require_redis()
        from sdserve.queue.redis import RedisQueue

        return RedisQueue.from_url(
            settings.redis_url, settings.redis_prefix, max_depth=settings.max_queue_depth
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
    if backend == "redis":
        _require_redis()
        from sdserve.queue.redis_wakeups import RedisWakeupBus

        return RedisWakeupBus.from_url(settings.redis_url, settings.redis_prefix, role)
    raise _unavailable(backend)


def require_shared_backend(settings: Settings) -> None:
    """`sdserve serve`, `api` and `worker` run the API and the workers in different
    processes; an in-memory queue would accept jobs that no worker ever sees."""
    if settings.queue_backend == "memory":
        raise BackendUnavailable(
            "SDSERVE_QUEUE_BACKEND=memory keeps jobs inside one process, but `sdserve "
            "serve`, `api` and `worker` run the API and workers as separate processes: "
            "use sqlite (one machine) or redis"
        )


def _require_redis() -> None:
    try:
        import redis  # noqa: F401
    except ImportError as exc:
        raise BackendUnavailable(
            "SDSERVE_QUEUE_BACKEND=redis needs the redis client: pip install 'sdserve[redis]'"
        ) from exc


def _unavailable(backend: str) -> BackendUnavailable:
    return BackendUnavailable(f"unknown queue backend {backend!r}")
