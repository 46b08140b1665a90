"""Is a model on disk whole? Read without torch and without loading tensors.

Catches what otherwise surfaces as a crash inside a worker, over and over: an empty
or truncated .safetensors file (its header names bytes the file does not have), a
header that is not JSON, a diffusers folder without a readable model_index.json, or
pickle-only weights (refused, never unpickled).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from sdserve.engine.catalog import PICKLE_SUFFIXES

_MAX_HEADER = 100_000_000
# Component folders that hold configs or tokenizer files, never weights.
_WEIGHTLESS = {"scheduler", "tokenizer", "tokenizer_2", "feature_extractor"}


def safetensors_problem(path: Path) -> str | None:
    """Why ``path`` is not a whole .safetensors file (None when it is)."""
    try:
        size = path.stat().st_size
        if size < 8:
            return f"{path.name} is empty or truncated ({size} bytes)"
        with path.open("rb") as fh:
            (length,) = struct.unpack("<Q", fh.read(8))
            if length > _MAX_HEADER or 8 + length > size:
                return f"{path.name} is truncated or not safetensors (bad header length)"
            header = json.loads(fh.read(length))
    except OSError as exc:
        return f"{path.name} cannot be read: {exc.strerror or exc}"
    except (ValueError, UnicodeDecodeError):
        return f"{path.name} is corrupt (its header is not JSON)"
    if not isinstance(header, dict):
        return f"{path.name} is corrupt (its header is not an object)"
    end = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2):
            return f"{path.name} is corrupt (tensor {str(name)[:60]!r} has no data offsets)"
        end = max(end, int(offsets[1]))
    if 8 + length + end > size:
        return f"{path.name} is truncated ({size} bytes, its header needs {8 + length + end})"
    return None


def folder_problem(folder: Path) -> str | None:
    """Why a diffusers folder cannot load (None when every weights file is whole)."""
    index = folder / "model_index.json"
    try:
        json.loads(index.read_text())
    except FileNotFoundError:
        return f"{folder.name} has no model_index.json"
    except (OSError, ValueError, UnicodeDecodeError):
        return f"{folder.name}/model_index.json is not readable JSON"
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and p.name not in _WEIGHTLESS):
        files = [f for f in sub.iterdir() if f.is_file()]
        safe = [f for f in files if f.suffix == ".safetensors"]
        if not safe and any(f.name.lower().endswith(PICKLE_SUFFIXES) for f in files):
            return f"{folder.name}/{sub.name} has only pickle-based weights (refused)"
        for f in safe:
            problem = safetensors_problem(f)
            if problem is not None:
                return f"{folder.name}/{sub.name}/{problem}"
    return None


def model_problem(source: str) -> str | None:
    """Why the model at ``source`` is broken; None when whole or not a local path
    (a hub id is checked when downloaded)."""
    path = Path(source)
    if source.lower().endswith(PICKLE_SUFFIXES):
        return f"{path.name}: pickle-based weights are refused; convert to .safetensors"
    if path.is_dir():
        return folder_problem(path)
    if path.is_file():
        if path.suffix != ".safetensors":
            return f"{path.name} is neither a diffusers folder nor a .safetensors file"
        return safetensors_problem(path)
    return None
