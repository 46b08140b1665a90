"""GET /v1/models: the catalog, with where each model is loaded now and how much
memory it holds there (the workers' published state), in a shape OpenAI's SDK reads
(``object: list``, ``data[{id, object, created, owned_by}]``) plus our own fields."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from sdserve.api.facade_openai import openai_model_fields
from sdserve.engine.base import ModelInfo
from sdserve.engine.catalog import Catalog
from sdserve.worker.registry import WorkerState


def source_kind(info: ModelInfo) -> str:
    path = Path(info.source)
    if path.is_dir():
        return "folder"
    return "single-file" if path.is_file() else "hub"


def model_list(catalog: Catalog, workers: list[WorkerState]) -> dict[str, Any]:
    placements: dict[str, list[dict[str, Any]]] = {}
    for w in sorted(workers, key=lambda s: s.id):
        for name in w.models_loaded:
            placements.setdefault(name, []).append(
                {
                    "worker": w.id,
                    "host": w.host,
                    "device": w.device,
                    "memory_bytes": w.models_memory.get(name),
                }
            )
    default = catalog.default.name
    data = [
        {
            **openai_model_fields(m),  # id, object, created, owned_by: OpenAI's SDK
            "name": m.name,
            "family": m.family,
            "source_kind": source_kind(m),
            "default_width": m.default_width,
            "default_height": m.default_height,
            "default_scheduler": m.default_scheduler,
            "dtype": m.dtype,
            "default": m.name == default,
            "loaded": m.name in placements,
            "tasks": list(m.tasks),
            "revision": m.revision,
            "aliases": list(m.aliases),
            "loaded_on": placements.get(m.name, []),
        }
        for m in catalog.all()
    ]
    rollouts = [
        {"alias": r.alias, "versions": r.shares(), "sticky": r.sticky}
        for r in catalog.rollouts().values()
    ]
    routes = []
    for rule in catalog.rules:
        conditions = {
            k: v for k, v in asdict(rule).items() if k not in ("name", "to") and v not in (None, ())
        }
        routes.append({"name": rule.name, "to": rule.to, "conditions": conditions})
    return {"object": "list", "data": data, "rollouts": rollouts, "routes": routes}
