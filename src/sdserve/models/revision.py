"""A model's revision: a short hash of its weight files.

Hashing gigabytes takes seconds, so each file's digest is cached in a small JSON file
keyed by (path, size, mtime): a restart or a reload re-hashes only files that changed.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

_CHUNK = 1 << 20
_LOCK = threading.Lock()


def weight_files(source: Path) -> list[Path]:
    """The .safetensors files a model's weights live in (a folder's, or the file)."""
    if source.is_file():
        return [source]
    if source.is_dir():
        return sorted(p for p in source.rglob("*.safetensors") if p.is_file())
    return []


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


class RevisionCache:
    """File digests keyed by path, size and mtime, kept in ``path`` (None: memory)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._entries: dict[str, dict[str, object]] = {}
        if path is not None and path.is_file():
            try:
                data = json.loads(path.read_text())
                self._entries = data if isinstance(data, dict) else {}
            except (OSError, ValueError):
                self._entries = {}  # a torn or foreign file: re-hash
        self.hashed = 0  # files actually read (tests check the cache works)

    def file_digest(self, path: Path) -> str:
        st = path.stat()
        key = str(path.resolve())
        entry = self._entries.get(key)
        if entry and entry.get("size") == st.st_size and entry.get("mtime_ns") == st.st_mtime_ns:
            return str(entry["sha256"])
        digest = _digest(path)
        self.hashed += 1
        self._entries[key] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest}
        return digest

    def revision(self, source: str) -> str:
        """12 hex digits over the weight files' relative names and digests; "" for
        a hub id (no local files)."""
        root = Path(source)
        files = weight_files(root)
        if not files:
            return ""
        h = hashlib.sha256()
        for f in files:
            rel = f.name if root.is_file() else f.relative_to(root).as_posix()
            h.update(f"{rel}\0{self.file_digest(f)}\n".encode())
        return h.hexdigest()[:12]

    def save(self) -> None:
        if self.path is None:
            return
        with _LOCK:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Unique temp name: API and worker processes may save at the same time.
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{threading.get_ident()}")
            tmp.write_text(json.dumps(self._entries, sort_keys=True))
            os.replace(tmp, self.path)
