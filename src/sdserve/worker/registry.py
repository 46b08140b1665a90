"""Which workers are alive and ready (model loaded and warmed), for /readyz and the
model list.

Each worker publishes a small JSON state every couple of seconds; one that stops
(killed) drops out after ``ttl`` seconds. Embedded deployment: a file per worker in
the run directory. Redis backend: a key per worker that expires by itself, so API
nodes on any machine see the workers of every machine.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from sdserve.config import Settings

# A worker refreshes its state every 2 s; one silent for this long is gone.
READY_TTL_S = 10.0


@dataclass
class WorkerState:
    id: str
    pid: int
    ready: bool
    models_loaded: list[str] = field(default_factory=list)
    device: str = ""
    updated_at: float = 0.0
    host: str = ""
    # Bytes of weights each loaded model holds on this worker (engine/footprint.py).
    models_memory: dict[str, int] = field(default_factory=dict)


class WorkerRegistry(Protocol):
    def publish(self, state: WorkerState) -> None: ...

    def live(self, ttl: float) -> list[WorkerState]: ...

    def remove(self, worker_id: str) -> None: ...

    def close(self) -> None: ...


def build_registry(settings: Settings) -> WorkerRegistry:
    """Where this deployment's workers publish their state (follows the queue backend:
    Redis when the queue is shared across machines, files in the run dir otherwise)."""
    if settings.queue_backend == "redis":
        from sdserve.worker.redis_registry import RedisRegistry

        return RedisRegistry.from_url(settings.redis_url, settings.redis_prefix)
    return FileRegistry(settings.run_dir / "worker-state")


def parse_state(text: str) -> WorkerState | None:
    try:
        return WorkerState(**json.loads(text))
    except (ValueError, TypeError):
        return None


class FileRegistry:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, worker_id: str) -> Path:
        return self.root / (worker_id.replace(":", "_").replace("/", "_") + ".json")

    def publish(self, state: WorkerState) -> None:
        state.updated_at = time.time()
        path = self._path(state.id)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(state)))
        os.replace(tmp, path)

    def live(self, ttl: float) -> list[WorkerState]:
        now = time.time()
        out: list[WorkerState] = []
        for path in self.root.glob("*.json"):
            try:
                state = parse_state(path.read_text())
            except OSError:
                continue
            if state is None:
                continue
            if now - state.updated_at <= ttl:
                out.append(state)
            elif now - state.updated_at > 10 * ttl:
                path.unlink(missing_ok=True)
        return out

    def remove(self, worker_id: str) -> None:
        self._path(worker_id).unlink(missing_ok=True)

    def close(self) -> None:
        """Nothing held open."""


class MemoryRegistry:
    def __init__(self) -> None:
        self._states: dict[str, WorkerState] = {}

    def publish(self, state: WorkerState) -> None:
        state.updated_at = time.time()
        self._states[state.id] = state

    def live(self, ttl: float) -> list[WorkerState]:
        now = time.time()
        return [s for s in self._states.values() if now - s.updated_at <= ttl]

    def remove(self, worker_id: str) -> None:
        self._states.pop(worker_id, None)

    def close(self) -> None:
        """Nothing held open."""


def ready_workers(registry: WorkerRegistry) -> list[WorkerState]:
    """Live workers whose model is loaded and warmed."""
    return [s for s in registry.live(READY_TTL_S) if s.ready]
