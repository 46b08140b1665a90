"""Which models exist and what they are, read from config files without torch.

The API validates ``model`` and fills in default sizes from here; the engine loads
weights from the same entries. Names: the folder or file stem under ``models_dir``,
or the configured default (path stem, or the hub id as given).
"""

from __future__ import annotations

import json
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from sdserve.domain import limits
from sdserve.domain.errors import InvalidRequest, ModelUnavailable, UnsafeWeights
from sdserve.engine.base import ModelInfo
from sdserve.models.rollout import Rollout
from sdserve.models.routing import RequestFacts, RouteRule, first_match

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
FAMILY_SIZE = _FAMILY_SIZE  # public: the registry sizes hub entries by family
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


def describe_checkpoint(name: str, path: Path, config: Path | None = None) -> ModelInfo:
    """A single-file checkpoint: architecture from tensor names, inpainting / x4
    upscaler from the input channels of the first UNet convolution; native size and
    scheduler from its config folder (``config``, else ``<stem>.config/`` beside it)
    when there is one."""
    header = safetensors_header(path)
    family = checkpoint_arch(header)
    shape = header.get(_SINGLE_FILE_CONV_IN, {}).get("shape")
    if isinstance(shape, list) and len(shape) == 4 and shape[1] in _IN_CHANNELS_FAMILY:
        family = _IN_CHANNELS_FAMILY[shape[1]]
    size = _FAMILY_SIZE[family]
    if family == "inpaint" and checkpoint_arch(header) == "sdxl":
        size = _FAMILY_SIZE["sdxl"]
    config = config or path.with_name(path.stem + ".config")
    if (config / "model_index.json").is_file():
        from_config = describe_folder(name, config)
        return replace(from_config, source=str(path), family=family, config=str(config))
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


@dataclass(frozen=True)
class Choice:
    """Which model serves a request, and why: ``alias`` is the alias or rollout the
    request named, ``rule`` the routing rule that fired (both None when neither)."""

    info: ModelInfo
    alias: str | None = None
    rule: str | None = None
    requested: str = ""


@dataclass(frozen=True)
class _State:
    default: ModelInfo
    by_name: dict[str, ModelInfo]
    aliases: dict[str, str]  # alias -> model name
    rollouts: dict[str, Rollout]
    rules: tuple[RouteRule, ...]
    # Models present in the folder but not whole: not listed, named in errors.
    broken: dict[str, str]


# An unknown name makes a reloadable catalog look again, at most this often.
_MISS_RELOAD_S = 1.0


class Catalog:
    """The models this deployment serves; the first is the default.

    A catalog built with a ``builder`` can ``reload()`` in place: every holder (API
    services, engine) sees the new models, aliases, rollouts and rules at once (one
    snapshot swapped atomically), without a restart.
    """

    def __init__(
        self,
        default: ModelInfo,
        extra: list[ModelInfo] | None = None,
        broken: dict[str, str] | None = None,
        *,
        aliases: dict[str, str] | None = None,
        rollouts: dict[str, Rollout] | None = None,
        rules: tuple[RouteRule, ...] = (),
        builder: Callable[[], Catalog] | None = None,
    ) -> None:
        by_name: dict[str, ModelInfo] = {default.name: default}
        for info in extra or []:
            by_name.setdefault(info.name, info)
        all_aliases = {a: m.name for m in by_name.values() for a in m.aliases}
        all_aliases.update(aliases or {})
        self._state = _State(
            default, by_name, all_aliases, dict(rollouts or {}), rules, dict(broken or {})
        )
        self._builder = builder
        # Workers turn this on: a job for a model added since they started finds it.
        # The API reloads only when told (a reload reads files: not on the event loop).
        self.reload_on_miss = False
        self._lock = threading.Lock()
        self._last_reload = time.monotonic()
        self.generation = 0  # reloads so far

    @classmethod
    def scan(
        cls, default: ModelInfo, models_dir: Path, builtin: list[ModelInfo] | None = None
    ) -> Catalog:
        """The default, every model under ``models_dir``, then ``builtin`` ones (a name
        already taken keeps its first entry)."""
        found, broken = scan_folder(models_dir)
        return cls(default, [*found, *(builtin or [])], broken)

    # --- reload ---

    def reload(self) -> Catalog:
        """Rebuild from the builder and swap in the result (a broken registry file
        raises and leaves the current catalog serving)."""
        if self._builder is None:
            return self
        with self._lock:
            fresh = self._builder()
            self._state = fresh._state
            self._last_reload = time.monotonic()
            self.generation += 1
        return self

    def _reload_on_miss(self) -> bool:
        if not self.reload_on_miss or self._builder is None:
            return False
        if time.monotonic() - self._last_reload < _MISS_RELOAD_S:
            return False
        try:
            self.reload()
        except Exception:  # a broken file: keep serving the catalog we have
            self._last_reload = time.monotonic()
            return False
        return True

    # --- reading ---

    @property
    def default(self) -> ModelInfo:
        return self._state.default

    @property
    def broken(self) -> dict[str, str]:
        return self._state.broken

    @property
    def rules(self) -> tuple[RouteRule, ...]:
        return self._state.rules

    def rollouts(self) -> dict[str, Rollout]:
        return dict(self._state.rollouts)

    def aliases(self) -> dict[str, str]:
        return dict(self._state.aliases)

    def names(self) -> list[str]:
        return list(self._state.by_name)

    def all(self) -> list[ModelInfo]:
        return list(self._state.by_name.values())

    def _valid(self, state: _State) -> str:
        return ", ".join([*state.by_name, *state.aliases, *state.rollouts])

    def get(self, name: str | None) -> ModelInfo:
        """A model by name or alias (with ``reload_on_miss``, an unknown name reloads
        the catalog once and looks again)."""
        if name is None:
            return self.default
        for attempt in (0, 1):
            state = self._state
            real = state.aliases.get(name, name)
            info = state.by_name.get(real)
            if info is not None:
                return info
            if attempt == 0 and not self._reload_on_miss():
                break
        state = self._state
        if name in state.broken:
            raise ModelUnavailable(
                f"model {name!r} is in the models folder but cannot be loaded: "
                f"{state.broken[name]}",
                model=name,
            )
        raise InvalidRequest.single(
            "model", f"unknown model {name[:256]!r}; valid: {self._valid(state)}"
        )

    def choose(self, name: str, key: str | None = None) -> Choice:
        """Resolve what a request named: a rollout alias picks a version (sticky per
        ``key``), a plain alias its model, a name itself."""
        rollout = self._state.rollouts.get(name)
        if rollout is not None:
            return Choice(self.get(rollout.choose(key)), alias=name, requested=name)
        info = self.get(name)
        return Choice(info, alias=name if info.name != name else None, requested=name)

    def route(self, choice: Choice, facts: RequestFacts) -> Choice:
        """The first routing rule matching ``facts`` sends the request to its model."""
        rule = first_match(self._state.rules, facts)
        if rule is None:
            return choice
        return Choice(
            self.get(rule.to), alias=choice.alias, rule=rule.name, requested=choice.requested
        )


def scan_folder(models_dir: Path) -> tuple[list[ModelInfo], dict[str, str]]:
    """Every diffusers folder and weights file directly under ``models_dir``, and the
    broken ones (name -> problem): a broken entry must not take the service down, nor
    be offered. A single-file checkpoint's ``<stem>.config/`` folder is not a model."""
    from sdserve.engine.integrity import model_problem

    found: list[ModelInfo] = []
    broken: dict[str, str] = {}
    if not models_dir.is_dir():
        return found, broken
    for entry in sorted(models_dir.iterdir()):
        is_folder = entry.is_dir() and (entry / "model_index.json").exists()
        is_weights = entry.is_file() and entry.name.lower().endswith(
            (".safetensors", *PICKLE_SUFFIXES)
        )
        beside = entry.with_name(entry.stem + ".safetensors")
        if is_folder and entry.suffix == ".config" and beside.is_file():
            continue  # a single-file checkpoint's config folder
        if not (is_folder or is_weights):
            continue
        name = entry.name if is_folder else entry.stem
        problem = model_problem(str(entry))
        if problem is None:
            try:
                found.append(
                    describe_folder(name, entry) if is_folder else describe_checkpoint(name, entry)
                )
            except (OSError, ValueError, UnsafeWeights) as exc:
                problem = f"{entry.name}: {exc}"
        if problem is not None:
            broken[name] = problem
    return found, broken
