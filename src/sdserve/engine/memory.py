"""Memory accounting for the model cache: sizes, budgets, and giving memory back.

Dropping the last reference to a pipeline is not enough for a long-running worker:
CPython's cycle collector may hold the modules until its next pass, CUDA's caching
allocator keeps freed blocks for reuse, and glibc's malloc keeps freed arenas mapped.
``release_memory`` runs all three steps, so an evicted model's memory really leaves
the process (tests/unit/test_model_cache_memory.py shows RSS flat over 20 switches).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import json
import os
import struct
from functools import cache
from pathlib import Path
from typing import Any

import torch

from sdserve.config import Settings

# Components a pipeline never needs (the loader skips them), so their files are not
# part of a model's memory.
_SKIPPED_COMPONENTS = {"safety_checker", "feature_extractor"}
_ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1}
_ITEMSIZE |= {"U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}
# Auto budgets: on a GPU the rest is for activations; on CPU leave room for the OS,
# the API process and request images.
_AUTO_DEVICE_FRACTION = 0.75
_AUTO_RAM_FRACTION = 0.5


@cache
def _libc() -> Any:
    name = ctypes.util.find_library("c")
    return ctypes.CDLL(name) if name else None


def malloc_trim() -> bool:
    """Ask glibc to return free heap pages to the OS; False where there is no glibc."""
    libc = _libc()
    trim = getattr(libc, "malloc_trim", None) if libc is not None else None
    if trim is None:
        return False
    return bool(trim(0))


def release_memory() -> None:
    """Collect cycles, empty CUDA's cache and trim the C heap (see module doc)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    malloc_trim()


def rss_bytes() -> int:
    """Resident set size of this process (Linux /proc; 0 where unavailable)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE")


def physical_ram() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (OSError, ValueError):
        return 0


def pipeline_bytes(pipe: Any) -> int:
    """Bytes held by the pipeline's weights (parameters and buffers of every torch
    module component; storage shared between components counted once)."""
    seen: set[tuple[str, int]] = set()
    total = 0
    components = getattr(pipe, "components", {}) or {}
    for module in components.values():
        if not isinstance(module, torch.nn.Module):
            continue
        for tensor in (*module.parameters(), *module.buffers()):
            key = (str(tensor.device), tensor.untyped_storage().data_ptr())
            if key in seen:
                continue
            seen.add(key)
            total += tensor.untyped_storage().nbytes()
    return total


def _header(path: Path) -> dict[str, Any]:
    with path.open("rb") as fh:
        (length,) = struct.unpack("<Q", fh.read(8))
        data = json.loads(fh.read(length))
    return data if isinstance(data, dict) else {}


def estimate_bytes(source: str, dtype: torch.dtype) -> int:
    """A model's weight bytes once loaded as ``dtype``, from the safetensors headers
    (no tensor is read). Floating-point tensors count at ``dtype``'s size, as the
    loader casts them. 0 when unknown (a hub id)."""
    path = Path(source)
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = [
            f
            for f in path.rglob("*.safetensors")
            if f.relative_to(path).parts[0] not in _SKIPPED_COMPONENTS
        ]
    else:
        return 0
    size = torch.empty((), dtype=dtype).element_size()
    total = 0
    for f in files:
        try:
            header = _header(f)
        except (OSError, ValueError, struct.error):
            continue
        for name, meta in header.items():
            if name == "__metadata__" or not isinstance(meta, dict):
                continue
            numel = 1
            for dim in meta.get("shape", []):
                numel *= int(dim)
            kind = str(meta.get("dtype", "F32"))
            item = size if kind.startswith(("F", "BF")) else _ITEMSIZE.get(kind, 4)
            total += numel * item
    return total


def device_budget(settings: Settings, device: torch.device) -> int:
    """Bytes the worker's models may take where they compute: the setting, else 75%
    of the GPU's memory on CUDA, 50% of physical RAM on CPU (and other devices)."""
    if settings.model_memory_budget_bytes:
        return settings.model_memory_budget_bytes
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
        return int(total * _AUTO_DEVICE_FRACTION)
    return int(physical_ram() * _AUTO_RAM_FRACTION)


def host_tier_budget(settings: Settings, device: torch.device) -> int:
    """Bytes of host RAM for models moved off an accelerator (0: no RAM tier). On CPU
    the device *is* host RAM, so there is no second tier. Model CPU offload manages
    placement itself, so it has none either."""
    if device.type == "cpu" or settings.cpu_offload:
        return 0
    if settings.model_ram_tier_bytes is not None:
        return settings.model_ram_tier_bytes
    return int(physical_ram() * _AUTO_RAM_FRACTION)
