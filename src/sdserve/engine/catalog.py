"""Which models exist and what they are, read from config files without torch.

The API validates ``model`` and fills in default sizes from here; the engine loads
weights from the same entries. Names: the folder or file stem under ``models_dir``,
or the configured default (path stem, or the hub id as given).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from sdserve.domain import limits
from sdserve.domain.errors import InvalidRequest, UnsafeWeights
from sdserve.engine.base import ModelInfo

PICKLE_SUFFIXES = (".ckpt", ".bin", ".pt", ".pth", ".pkl")
_FAMILY_SIZE = {"sd1": 512, "sd2": 768, "sdxl": 1024, "unknown": 512}


def refuse_pickle(source: str) -> None:
    if source.lower().endswith(PICKLE_SUFFIXES):
        raise UnsafeWeights(
            f"refusing to load {source!r}: pickle-based weights (.ckpt/.bin/.pt) can run "
            "arbitrary code; convert the checkpoint to .safetensors"
        )


# diffusers scheduler class -> our name (engine/schedulers.py maps back; a test checks).
NATIVE_SCHEDULERS = {
    "DDIMScheduler": "ddim",
    "EulerDiscreteScheduler": "euler",
    "EulerAncestralDiscreteScheduler": "euler_a",
    "DPMSolverMultistepScheduler": "dpmpp_2m",
    "UniPCMultistepScheduler": "unipc",
    "LCMScheduler": "lcm",
    "PNDMScheduler": "pndm",
    "HeunDiscreteScheduler": "heun",
    "LMSDiscreteScheduler": "lms",
}


def native_scheduler(folder: Path) -> str:
    """Our name for the scheduler a diffusers folder ships (the domain default if
    it is one we do not offer)."""
    path = folder / "scheduler" / "scheduler_config.json"
    if not path.exists():
        return limits.DEFAULT_SCHEDULER
    config = _read_json(path)
    name = NATIVE_SCHEDULERS.get(str(config.get("_class_name")), limits.DEFAULT_SCHEDULER)
    if name == "dpmpp_2m" and config.get("use_karras_sigmas"):
        name = "dpmpp_2m_karras"
    return name


def _read_json(path: Path) -> dict[str, object]:
    data = json.loads(path.read_text())
    return data if isinstance(data, dict) else {}


def describe_folder(name: str, folder: Path) -> ModelInfo:
    """A diffusers folder (model_index.json): family and native size from its configs."""
    index = _read_json(folder / "model_index.json")
    cls = str(index.get("_class_name", ""))
    family = "sdxl" if "XL" in cls else "sd1"
    size = _FAMILY_SIZE[family]
    unet_cfg = folder / "unet" / "config.json"
    vae_cfg = folder / "vae" / "config.json"
    if unet_cfg.exists() and vae_cfg.exists():
        sample = _read_json(unet_cfg).get("sample_size")
        blocks = _read_json(vae_cfg).get("block_out_channels") or [0]
        if isinstance(sample, int) and isinstance(blocks, list):
            size = sample * 2 ** (len(blocks) - 1)
    te_cfg = folder / "text_encoder" / "config.json"
    if family == "sd1" and te_cfg.exists() and _read_json(te_cfg).get("hidden_size") == 1024:
        family = "sd2"
    return ModelInfo(
        name, str(folder), family, size, size, default_scheduler=native_scheduler(folder)
    )


def safetensors_keys(path: Path) -> list[str]:
    """Tensor names from a .safetensors header (8-byte length + JSON), no torch."""
    with path.open("rb") as fh:
        (length,) = struct.unpack("<Q", fh.read(8))
        if length > 100_000_000:
            raise UnsafeWeights(f"{path.name}: implausible safetensors header")
        header = json.loads(fh.read(length))
    return [k for k in header if k != "__metadata__"]


def describe_checkpoint(name: str, path: Path) -> ModelInfo:
    keys = safetensors_keys(path)
    if any(k.startswith("conditioner.embedders.1") for k in keys):
        family = "sdxl"
    elif any(k.startswith("cond_stage_model.model.") for k in keys):
        family = "sd2"
    else:
        family = "sd1"
    size = _FAMILY_SIZE[family]
    return ModelInfo(name, str(path), family, size, size)


def describe(name: str, source: str) -> ModelInfo:
    refuse_pickle(source)
    path = Path(source)
    if path.is_dir() and (path / "model_index.json").exists():
        return describe_folder(name, path)
    if path.is_file() and path.suffix == ".safetensors":
        return describe_checkpoint(name, path)
    if path.exists():
        raise InvalidRequest.single(
            "model", f"{source!r} is neither a diffusers folder nor a .safetensors file"
        )
    # Neither a folder nor a file: a hub id, loaded only when downloads are allowed.
    return ModelInfo(name, source, "unknown", 512, 512)


class Catalog:
    """The models this deployment serves; the first is the default."""

    def __init__(self, default: ModelInfo, extra: list[ModelInfo] | None = None) -> None:
        self.default = default
        self._by_name: dict[str, ModelInfo] = {default.name: default}
        for info in extra or []:
            self._by_name.setdefault(info.name, info)

    @classmethod
    def scan(
        cls, default: ModelInfo, models_dir: Path, builtin: list[ModelInfo] | None = None
    ) -> Catalog:
        """The default, every model under ``models_dir``, then ``builtin`` ones (a name
        already taken keeps its first entry)."""
        extra: list[ModelInfo] = []
        if models_dir.is_dir():
            for entry in sorted(models_dir.iterdir()):
                try:
                    if entry.is_dir() and (entry / "model_index.json").exists():
                        extra.append(describe_folder(entry.name, entry))
                    elif entry.suffix == ".safetensors":
                        extra.append(describe_checkpoint(entry.stem, entry))
                except (OSError, ValueError, UnsafeWeights):
                    continue  # a broken entry must not take the service down
        return cls(default, [*extra, *(builtin or [])])

    def names(self) -> list[str]:
        return list(self._by_name)

    def all(self) -> list[ModelInfo]:
        return list(self._by_name.values())

    def get(self, name: str | None) -> ModelInfo:
        if name is None:
            return self.default
        info = self._by_name.get(name)
        if info is None:
            raise InvalidRequest.single(
                "model", f"unknown model {name!r}; valid: {', '.join(self.names())}"
            )
        return info
