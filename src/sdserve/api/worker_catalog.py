"""The models an `sdserve api` node offers: whatever its live workers publish in the
registry (Redis or the run dir), so the API loads no model and needs no models folder.

A background thread reads the registry every couple of seconds (requests never wait
on it) and keeps the last catalog it saw: a restart of every worker does not empty it.
Until some worker has published since this API started, model-dependent requests get
a retryable 503 ``not_ready``.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import fields
from typing import Any

from sdserve.domain.errors import NotReady
from sdserve.engine.base import ModelInfo
from sdserve.engine.catalog import Catalog
from sdserve.worker.registry import READY_TTL_S, WorkerRegistry, WorkerState

log = logging.getLogger("sdserve.api")
_REFRESH_S = 2.0
_INFO_FIELDS = {f.name for f in fields(ModelInfo)}


def merge_states(states: list[WorkerState], preferred: str) -> Catalog | None:
    """One catalog from every worker's (first publisher of a name wins); the default is
    ``preferred`` when some worker serves it, else the first worker's default."""
    by_name: dict[str, ModelInfo] = {}
    defaults: list[str] = []
    for state in sorted(states, key=lambda s: s.id):
        for raw in state.catalog:
            try:
                values = {k: v for k, v in raw.items() if k in _INFO_FIELDS}
                values["aliases"] = tuple(values.get("aliases", ()))  # JSON made it a list
                info = ModelInfo(**values)
            except TypeError:
                continue  # a newer or older worker's shape: skip, do not fail
            by_name.setdefault(info.name, info)
        if state.default_model:
            defaults.append(state.default_model)
    if not by_name:
        return None
    name = (
        preferred
        if preferred in by_name
        else next((d for d in defaults if d in by_name), next(iter(by_name)))
    )
    default = by_name[name]
    return Catalog(default, [m for m in by_name.values() if m.name != name])


class WorkerCatalog(Catalog):
    """Catalog's reading methods (get, choose, route, aliases, ...) work on ``_state``,
    which here is the latest snapshot merged from the workers' states."""

    def __init__(self, registry: WorkerRegistry, preferred_default: str = "") -> None:
        self.registry = registry
        self.preferred = preferred_default
        self._current: Catalog | None = None
        self._builder = None
        self.reload_on_miss = False  # the refresh thread follows the workers instead
        self._lock = threading.Lock()
        self._last_reload = 0.0
        self.generation = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="worker-catalog", daemon=True)
        self.refresh()
        self._thread.start()

    @property
    def _state(self) -> Any:
        return self._snapshot()._state

    @_state.setter
    def _state(self, value: Any) -> None:  # pragma: no cover - never reloaded in place
        raise AttributeError("the worker catalog follows the workers' registry entries")

    def all(self) -> list[ModelInfo]:
        current = self._current
        return current.all() if current is not None else []

    def refresh(self) -> None:
        try:
            merged = merge_states(self.registry.live(READY_TTL_S), self.preferred)
        except Exception:  # the registry is away: keep what we knew
            log.exception("reading the workers' models failed")
            return
        if merged is not None:
            self._current = merged
            self.generation += 1

    def close(self) -> None:
        self._stop.set()

    def _snapshot(self) -> Catalog:
        current = self._current
        if current is None:
            raise NotReady(
                "no worker has published its models yet; start a worker (`sdserve worker`) "
                "and retry"
            )
        return current

    def _run(self) -> None:
        while not self._stop.wait(_REFRESH_S):
            self.refresh()
