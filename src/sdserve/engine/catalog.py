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
from sdserve.domain.errors import InvalidRequest, ModelUnavailable, UnsafeWeights
from sdserve.engine.base import ModelInfo

PICKLE_SUFFIXES = (".ckpt", ".bin", ".pt", ".pth", ".pkl")
# Native (default) sizes when the configs do not say. For upscalers this is the
# *output* size of their usual input: x4 from 128, x2 from 512.
_FAMILY_SIZE = {
    "sd1": 512,
    "sd2": 768,
    "sdxl": 1024,
    "unknown": 512,
    "inpaint": 512,
    "upscaler": 512,
    "latent-upscaler": 1024,
}
# model_index.json pipeline classes that fix the family outright.
_CLASS_FAMILY = {
    "StableDiffusionInpaintPipeline": "inpaint",
    "StableDiffusionXLInpaintPipeline": "inpaint",
    "StableDiffusionUpscalePipeline": "upscaler",
    "StableDiffusionLatentUpscalePipeline": "latent-upscaler",
}
# Input channels of the UNet's first convolution: 9 = latents + mask + masked image
# (inpainting), 7 = latents + low-res RGB (x4 upscaler).
_IN_CHANNELS_FAMILY = {9: "inpaint", 7: "upscaler"}
# The first UNet convolution in original-format (single-file) checkpoints.
_SINGLE_FILE_CONV_IN = "model.diffusion_model.input_blocks.0.0.weight"


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


def folder_is_xl(folder: Path) -> bool:
    """An SDXL-architecture diffusers folder (txt2img or inpainting)."""
    cls = str(_read_json(folder / "model_index.json").get("_class_name", ""))
    return "XL" in cls or (folder / "text_encoder_2").is_dir()


def _folder_family(folder: Path, cls: str) -> str:
    family = _CLASS_FAMILY.get(cls)
    if family is not None:
        return family
    unet_cfg = folder / "unet" / "config.json"
    in_channels = _read_json(unet_cfg).get("in_channels") if unet_cfg.exists() else None
    if isinstance(in_channels, int) and in_channels in _IN_CHANNELS_FAMILY:
        return _IN_CHANNELS_FAMILY[in_channels]
    if "XL" in cls:
        return "sdxl"
    te_cfg = folder / "text_encoder" / "config.json"
    if te_cfg.exists() and _read_json(te_cfg).get("hidden_size") == 1024:
        return "sd2"
    return "sd1"


def describe_folder(name: str, folder: Path) -> ModelInfo:
    """A diffusers folder (model_index.json): family and native size from its configs.

    Family: the pipeline class when it names a task (inpainting, x4 / latent x2
    upscaler), else the UNet's input channels (9 = inpainting, 7 = x4 upscaler), else
    SDXL by class, SD2 by a 1024-wide text encoder, else SD1. Size: the UNet's
    ``sample_size`` times the VAE's downsampling, which for upscalers is their output.
    """
    index = _read_json(folder / "model_index.json")
    family = _folder_family(folder, str(index.get("_class_name", "")))
    size = _FAMILY_SIZE[family]
    unet_cfg = folder / "unet" / "config.json"
    vae_cfg = folder / "vae" / "config.json"
    if unet_cfg.exists() and vae_cfg.exists():
        sample = _read_json(unet_cfg).get("sample_size")
        blocks = _read_json(vae_cfg).get("block_out_channels") or [0]
        if isinstance(sample, int) and isinstance(blocks, list):
            size = sample * 2 ** (len(blocks) - 1)
    return ModelInfo(
        name, str(folder), family, size, size, default_scheduler=native_scheduler(folder)
    )


def safetensors_header(path: Path) -> dict[str, dict[str, object]]:
    """Tensor name -> {dtype, shape, data_offsets} from a .safetensors header
    (8-byte length + JSON), without torch and without reading the tensors."""
    with path.open("rb") as fh:
        (length,) = struct.unpack("<Q", fh.read(8))
        if length > 100_000_000:
            raise UnsafeWeights(f"{path.name}: implausible safetensors header")
        header = json.loads(fh.read(length))
    return {k: v for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)}


def safetensors_keys(path: Path) -> list[str]:
    return list(safetensors_header(path))


def checkpoint_arch(header: dict[str, dict[str, object]]) -> str:
    """sd1 / sd2 / sdxl from original-format tensor names."""
    if any(k.startswith("conditioner.embedders.1") for k in header):
        return "sdxl"
    if any(k.startswith("cond_stage_model.model.") for k in header):
        return "sd2"
    return "sd1"


def describe_checkpoint(name: str, path: Path) -> ModelInfo:
    """A single-file checkpoint: architecture from tensor names, inpainting / x4
    upscaler from the input channels of the first UNet convolution."""
    header = safetensors_header(path)
    family = checkpoint_arch(header)
    shape = header.get(_SINGLE_FILE_CONV_IN, {}).get("shape")
    if isinstance(shape, list) and len(shape) == 4 and shape[1] in _IN_CHANNELS_FAMILY:
        family = _IN_CHANNELS_FAMILY[shape[1]]
    size = _FAMILY_SIZE[family]
    if family == "inpaint" and checkpoint_arch(header) == "sdxl":
        size = _FAMILY_SIZE["sdxl"]
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

    def __init__(
        self,
        default: ModelInfo,
        extra: list[ModelInfo] | None = None,
        broken: dict[str, str] | None = None,
    ) -> None:
        self.default = default
        # Models present in the folder but not whole: not listed, named in errors.
        self.broken = dict(broken or {})
        self._by_name: dict[str, ModelInfo] = {default.name: default}
        for info in extra or []:
            self._by_name.setdefault(info.name, info)

    @classmethod
    def scan(
        cls, default: ModelInfo, models_dir: Path, builtin: list[ModelInfo] | None = None
    ) -> Catalog:
        """The default, every model under ``models_dir``, then ``builtin`` ones (a name
        already taken keeps its first entry)."""
        from sdserve.engine.integrity import model_problem

        extra: list[ModelInfo] = []
        broken: dict[str, str] = {}
        if models_dir.is_dir():
            for entry in sorted(models_dir.iterdir()):
                is_folder = entry.is_dir() and (entry / "model_index.json").exists()
                is_weights = entry.is_file() and entry.name.lower().endswith(
                    (".safetensors", *PICKLE_SUFFIXES)
                )
                if not (is_folder or is_weights):
                    continue
                name = entry.name if is_folder else entry.stem
                # A broken entry must not take the service down, nor be offered.
                problem = model_problem(str(entry))
                if problem is None:
                    try:
                        extra.append(
                            describe_folder(name, entry)
                            if is_folder
                            else describe_checkpoint(name, entry)
                        )
                    except (OSError, ValueError, UnsafeWeights) as exc:
                        problem = f"{entry.name}: {exc}"
                if problem is not None:
                    broken[name] = problem
        return cls(default, [*extra, *(builtin or [])], broken)

    def names(self) -> list[str]:
        return list(self._by_name)

    def all(self) -> list[ModelInfo]:
        return list(self._by_name.values())

    def get(self, name: str | None) -> ModelInfo:
        if name is None:
            return self.default
        info = self._by_name.get(name)
        if info is None and name in self.broken:
            raise ModelUnavailable(
                f"model {name!r} is in the models folder but cannot be loaded: {self.broken[name]}",
                model=name,
            )
        if info is None:
            raise InvalidRequest.single(
                "model", f"unknown model {name[:256]!r}; valid: {', '.join(self.names())}"
            )
        return info
