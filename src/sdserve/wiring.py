"""Factories that turn Settings into the pieces (torch-free; the engine is built by
the worker process). Nothing here runs at import time."""

from __future__ import annotations

import logging
from pathlib import Path

from sdserve.config import Settings
from sdserve.engine.base import ModelInfo
from sdserve.engine.catalog import Catalog, describe
from sdserve.models.registry import build_catalog_from, reloadable
from sdserve.models.revision import RevisionCache
from sdserve.storage.base import BlobStore
from sdserve.storage.factory import build_blobs as _build_blobs

log = logging.getLogger("sdserve")

ASSETS = Path(__file__).parent / "assets"
PACKAGED_DEMO = ASSETS / "demo-model"
DEMO_NAME = "demo"
TINY_NAME = "tiny"
# The demo model's editing companions (trained by sdserve.training), served beside it.
PACKAGED_COMPANIONS = {
    "demo-inpaint": ASSETS / "demo-inpaint",
    "demo-upscaler": ASSETS / "demo-upscaler",
}


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
    builtin += [
        describe(name, str(path))
        for name, path in PACKAGED_COMPANIONS.items()
        if (path / "model_index.json").exists()
    ]
    registry = settings.model_registry or settings.resolved_models_dir / "registry.toml"
    path = registry if settings.model_registry or registry.is_file() else None
    revisions = settings.data_dir / "model-revisions.json"

    def build() -> Catalog:
        return build_catalog_from(
            default_model(settings),
            settings.resolved_models_dir,
            builtin,
            path,
            RevisionCache(revisions),
            settings.allow_hub_downloads,
            settings.model,
        )

    return reloadable(build)


def task_models(settings: Settings, catalog: Catalog) -> dict[str, str]:
    """The model a request without ``model`` gets, per task. Inpaint: the configured
    one, the demo's inpainting companion when the demo is the default, else the
    default model (any SD checkpoint inpaints). Upscale: the configured one, else the
    first upscaler in the catalog (none: an upscale request must name a model)."""
    default = catalog.default
    names = set(catalog.names())
    out = {"txt2img": default.name, "img2img": default.name, "inpaint": default.name}
    if settings.inpaint_model:
        out["inpaint"] = settings.inpaint_model
    elif default.name == DEMO_NAME and "demo-inpaint" in names:
        out["inpaint"] = "demo-inpaint"
    upscaler = settings.upscale_model or next(
        (m.name for m in catalog.all() if "upscale" in m.tasks), None
    )
    if upscaler is not None:
        out["upscale"] = upscaler
    return out


def build_blobs(settings: Settings) -> BlobStore:
    return _build_blobs(settings)
