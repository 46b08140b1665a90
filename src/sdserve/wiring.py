"""Factories that turn Settings into the pieces (torch-free; the engine is built by
the worker process). Nothing here runs at import time."""

from __future__ import annotations

import logging
from pathlib import Path

from sdserve.config import Settings
from sdserve.engine.base import ModelInfo
from sdserve.engine.catalog import Catalog, describe
from sdserve.storage.base import BlobStore
from sdserve.storage.factory import build_blobs as _build_blobs

log = logging.getLogger("sdserve")

PACKAGED_DEMO = Path(__file__).parent / "assets" / "demo-model"
DEMO_NAME = "demo"
TINY_NAME = "tiny"


def packaged_demo_available() -> bool:
    return (PACKAGED_DEMO / "model_index.json").exists()


def tiny_model_path(settings: Settings) -> Path:
    return settings.resolved_models_dir / TINY_NAME


def default_model(settings: Settings) -> ModelInfo:
    """The configured model, else the packaged demo, else the random tiny model."""
    if settings.model:
        candidate = settings.resolved_models_dir / settings.model
        if candidate.exists():
            return describe(candidate.stem, str(candidate))
        source = Path(settings.model)
        name = source.stem if source.exists() else settings.model
        return describe(name, settings.model)
    if packaged_demo_available():
        return describe(DEMO_NAME, str(PACKAGED_DEMO))
    return describe(TINY_NAME, str(tiny_model_path(settings)))


def build_catalog(settings: Settings) -> Catalog:
    builtin = [describe(DEMO_NAME, str(PACKAGED_DEMO))] if packaged_demo_available() else []
    return Catalog.scan(default_model(settings), settings.resolved_models_dir, builtin)


def build_blobs(settings: Settings) -> BlobStore:
    return _build_blobs(settings)
