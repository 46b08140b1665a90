"""A model's revision for the result cache: the catalog's, else a hash of its weights."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

from sdserve.engine.base import ModelInfo

_CHUNK = 1 << 20
_lock = threading.Lock()
# (path, size, mtime_ns) of every weight file -> digest: hashed once per process, and
# again only when a file changes.
_memo: dict[tuple[tuple[str, int, int], ...], str] = {}


def _weight_files(source: Path) -> list[Path]:
    if source.is_file():
        return [source]
    return sorted(p for p in source.rglob("*.safetensors") if p.is_file())


def weights_hash(source: str) -> str:
    """sha256 over the model's .safetensors files (names and contents); a hub id
    stands for itself."""
    path = Path(source)
    if not path.exists():
        return "hub:" + source
    files = _weight_files(path)
    stamp = tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    with _lock:
        known = _memo.get(stamp)
        if known is not None:
            return known
        digest = hashlib.sha256()
        for f in files:
            digest.update(str(f.relative_to(path) if path.is_dir() else f.name).encode())
            with f.open("rb") as fh:
                while chunk := fh.read(_CHUNK):
                    digest.update(chunk)
        value = "sha256:" + digest.hexdigest()
        _memo[stamp] = value
        return value


def model_revision(info: ModelInfo) -> str:
    """The catalog's revision when it has one, else the weights' hash."""
    declared = getattr(info, "revision", None)
    if isinstance(declared, str) and declared:
        return declared
    return weights_hash(info.source)
