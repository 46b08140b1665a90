"""Load a catalog entry into a diffusers pipeline: safetensors only, offline by default.

Pickle-based weights are refused *before* any file is opened (``catalog.refuse_pickle``
on the source, a directory scan for diffusers folders): nothing here ever unpickles.
The diffusers safety checker is never loaded; image safety is its own layer.
"""

from __future__ import annotations

import inspect
import logging
from pathlib import Path
from typing import Any

from sdserve.config import Settings
from sdserve.domain.errors import ModelLoadError, UnsafeWeights
from sdserve.engine.base import ModelInfo
from sdserve.engine.catalog import (
    PICKLE_SUFFIXES,
    checkpoint_arch,
    folder_is_xl,
    refuse_pickle,
    safetensors_header,
)
from sdserve.engine.device import placement

log = logging.getLogger(__name__)

# A pipeline never needs these to generate; skipping them avoids loading the
# diffusers NSFW checker (and its weights) that real SD folders still list.
_NO_SAFETY: dict[str, Any] = {
    "safety_checker": None,
    "feature_extractor": None,
    "requires_safety_checker": False,
}
_WEIGHTLESS = {"tokenizer", "tokenizer_2", "scheduler", "safety_checker", "feature_extractor"}


def pipeline_class(family: str, xl: bool = False) -> Any:
    """The pipeline a family loads as; ``xl`` picks the SDXL inpainting pipeline.

    Text-to-image families load their txt2img pipeline; img2img and inpainting
    pipelines are derived from it on demand (engine/tasks.py, sharing the weights).
    """
    import diffusers

    if family == "sdxl":
        return diffusers.StableDiffusionXLPipeline
    if family == "unknown":  # a hub id: let its model_index.json decide
        return diffusers.AutoPipelineForText2Image
    if family == "inpaint":
        return (
            diffusers.StableDiffusionXLInpaintPipeline
            if xl
            else diffusers.StableDiffusionInpaintPipeline
        )
    if family == "upscaler":
        return diffusers.StableDiffusionUpscalePipeline
    if family == "latent-upscaler":
        return diffusers.StableDiffusionLatentUpscalePipeline
    return diffusers.StableDiffusionPipeline


def _is_xl(info: ModelInfo) -> bool:
    """Whether an inpainting checkpoint has the SDXL architecture (read from its
    configs or tensor names; hub ids are assumed SD)."""
    path = Path(info.source)
    if path.is_dir() and (path / "model_index.json").is_file():
        return folder_is_xl(path)
    if path.is_file() and path.suffix == ".safetensors":
        return checkpoint_arch(safetensors_header(path)) == "sdxl"
    return False


def _init_kwargs(cls: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` less the ones ``cls`` does not take (upscalers have no
    ``requires_safety_checker``); auto pipelines pass everything on."""
    if cls.__name__.startswith("AutoPipeline"):
        return kwargs
    params = inspect.signature(cls.__init__).parameters
    return {k: v for k, v in kwargs.items() if k in params or k == "dtype"}


def check_folder_weights(folder: Path) -> None:
    """Refuse a diffusers folder where a component has only pickle weights.

    ``use_safetensors=True`` would also fail, but with a generic message; this names
    the component and the fix, and runs before diffusers touches any file.
    """
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        if sub.name in _WEIGHTLESS:
            continue
        files = [f.name for f in sub.iterdir() if f.is_file()]
        has_safe = any(f.endswith(".safetensors") for f in files)
        pickled = sorted(f for f in files if f.lower().endswith(PICKLE_SUFFIXES))
        if pickled and not has_safe:
            raise UnsafeWeights(
                f"refusing to load {folder}: component {sub.name!r} has only pickle-based "
                f"weights ({', '.join(pickled)}); convert them to .safetensors "
                "(e.g. load once in a sandbox and save_pretrained(safe_serialization=True))"
            )


def find_single_file_config(checkpoint: Path, family: str, settings: Settings) -> Path | None:
    """A local diffusers config folder for a single-file checkpoint, if one exists.

    Looked for, in order: ``<stem>.config/`` beside the checkpoint, then
    ``<models_dir>/configs/<family>/`` (sd1, sd2, sdxl, inpaint, upscaler,
    latent-upscaler). Configs only, no weights.
    """
    candidates = [
        checkpoint.with_name(checkpoint.stem + ".config"),
        settings.resolved_models_dir / "configs" / family,
    ]
    for c in candidates:
        if (c / "model_index.json").is_file():
            return c
    return None


def _from_folder(cls: Any, folder: Path, kwargs: dict[str, Any]) -> Any:
    check_folder_weights(folder)
    try:
        return cls.from_pretrained(
            str(folder), use_safetensors=True, local_files_only=True, **kwargs
        )
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"could not load {folder}: {exc} (only .safetensors weights are loaded)"
        ) from exc


def _from_single_file(
    cls: Any, info: ModelInfo, path: Path, settings: Settings, kwargs: dict[str, Any]
) -> Any:
    family = info.family if info.family != "unknown" else "sd1"
    config = Path(info.config) if info.config else find_single_file_config(path, family, settings)
    if (
        config is not None
        and family == "sd1"
        and checkpoint_arch(safetensors_header(path)) == "sd1"
    ):
        # Our own loader (engine/singlefile.py): same bits as the folder it came from.
        from sdserve.engine.singlefile import load_single_file

        try:
            return load_single_file(path, config, **kwargs)
        except (OSError, ValueError, RuntimeError) as exc:
            raise ModelLoadError(f"could not load {path}: {exc}") from exc
    if config is None and not settings.allow_hub_downloads:
        raise ModelLoadError(
            f"{path.name} is a single-file checkpoint ({family}); loading it offline needs "
            f"a diffusers config folder (model_index.json + component configs + tokenizer "
            f"files, no weights). Put one at {path.with_name(path.stem + '.config')} or "
            f"{settings.resolved_models_dir / 'configs' / family}, or convert the "
            "checkpoint to a diffusers folder, or set SDSERVE_ALLOW_HUB_DOWNLOADS=true"
        )
    extra: dict[str, Any] = (
        {"config": str(config), "local_files_only": True} if config is not None else {}
    )
    try:
        return cls.from_single_file(str(path), **extra, **kwargs)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"could not load {path}: {exc}") from exc


def _quiet_loading() -> None:
    """Progress bars belong on a terminal, not in a service's logs."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]


def _dtype(info: ModelInfo) -> Any:
    """A registry entry's own dtype (None: the deployment's)."""
    import torch

    return getattr(torch, info.dtype) if info.dtype else None


def load_pipeline(info: ModelInfo, settings: Settings) -> Any:
    """Build the pipeline for ``info`` with Settings' dtype (not yet moved to a device)."""
    refuse_pickle(info.source)
    _quiet_loading()
    cls = pipeline_class(info.family, xl=info.family == "inpaint" and _is_xl(info))
    kwargs: dict[str, Any] = {"dtype": _dtype(info) or placement(settings).dtype}
    if info.family != "sdxl":
        kwargs.update(_NO_SAFETY)
    kwargs = _init_kwargs(cls, kwargs)
    path = Path(info.source)
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise ModelLoadError(f"{path} is not a diffusers folder (no model_index.json)")
        return _from_folder(cls, path, kwargs)
    if path.is_file():
        if path.suffix != ".safetensors":
            raise UnsafeWeights(f"refusing to load {path.name}: only .safetensors is loaded")
        return _from_single_file(cls, info, path, settings, kwargs)
    if not settings.allow_hub_downloads:
        raise ModelLoadError(
            f"model {info.source!r} is not a local folder or file, and hub downloads are "
            "off (SDSERVE_ALLOW_HUB_DOWNLOADS=true to allow them)"
        )
    log.info("downloading %s from the hub (safetensors only)", info.source)
    try:
        # A registry entry may pin the hub revision (its `revision` field).
        pinned = {"revision": info.revision} if info.revision else {}
        return cls.from_pretrained(info.source, use_safetensors=True, **pinned, **kwargs)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"could not load {info.source!r}: {exc}") from exc
