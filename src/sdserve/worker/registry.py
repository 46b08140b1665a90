"""Which workers are alive and ready (model loaded and warmed), for /readyz.

Embedded deployment: each worker keeps a small JSON file fresh in the run directory.
A worker that stops refreshing it (killed) drops out after ``ttl`` seconds.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

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


class WorkerRegistry(Protocol):
    def publish(self, state: WorkerState) -> None: ...

    def live(self, ttl: float) -> list[WorkerState]: ...

    def remove(self, worker_id: str) -> None: ...


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
                state = WorkerState(**json.loads(path.read_text()))
            except (OSError, ValueError, TypeError):
                continue
            if now - state.updated_at <= ttl:
                out.append(state)
            elif now - state.updated_at > 10 * ttl:
                path.unlink(missing_ok=True)
        return out

    def remove(self, worker_id: str) -> None:
        self._path(worker_id).unlink(missing_ok=True)


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


def ready_workers(registry: WorkerRegistry) -> list[WorkerState]:
    """Live workers whose model is loaded and warmed."""
    return [s for s in registry.live(READY_TTL_S) if s.ready]
