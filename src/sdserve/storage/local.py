"""Local-directory blob store (the embedded default)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from sdserve.storage.base import checked_image_id


class LocalBlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, image_id: str) -> Path:
        image_id = checked_image_id(image_id)
        return self.root / image_id[:2] / image_id

    def put(self, image_id: str, data: bytes) -> None:
        path = self._path(image_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write then rename so a reader never sees half an image.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get(self, image_id: str) -> bytes | None:
        try:
            return self._path(image_id).read_bytes()
        except FileNotFoundError:
            return None

    def delete(self, image_id: str) -> bool:
        try:
            self._path(image_id).unlink()
            return True
        except FileNotFoundError:
            return False

    def exists(self, image_id: str) -> bool:
        return self._path(image_id).exists()

    def url(self, image_id: str, ttl_seconds: int) -> str | None:
        checked_image_id(image_id)
        return None  # served by the API
