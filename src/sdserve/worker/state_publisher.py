"""Refresh a worker's published state from its engine: which models are loaded and
how much memory each holds (engines that cannot say publish no sizes)."""

from __future__ import annotations

import logging

from sdserve.engine.base import GenerationEngine
from sdserve.worker.registry import WorkerRegistry, WorkerState

log = logging.getLogger("sdserve.worker")


def refresh(state: WorkerState, engine: GenerationEngine) -> WorkerState:
    state.models_loaded = engine.loaded_models()
    sizes = getattr(engine, "model_memory", None)
    if callable(sizes):
        try:
            state.models_memory = {k: int(v) for k, v in sizes().items()}
        except Exception:  # a model evicted mid-count: sizes again next round
            log.debug("model sizes unavailable this round", exc_info=True)
    return state


def publish(registry: WorkerRegistry, state: WorkerState, engine: GenerationEngine) -> None:
    registry.publish(refresh(state, engine))
