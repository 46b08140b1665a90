"""Local-directory blob store (the embedded default)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from sdserve.storage.base import blob_key, tenant_prefix


class LocalBlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, image_id: str, tenant: str | None) -> Path:
        return self.root.joinpath(*blob_key(image_id, tenant).split("/"))

    def put(self, image_id: str, data: bytes, tenant: str | None = None) -> None:
        path = self._path(image_id, tenant)
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

    def get(self, image_id: str, tenant: str | None = None) -> bytes | None:
        try:
            return self._path(image_id, tenant).read_bytes()
        except FileNotFoundError:
            return None

    def delete(self, image_id: str, tenant: str | None = None) -> bool:
        try:
            self._path(image_id, tenant).unlink()
            return True
        except FileNotFoundError:
            return False

    def delete_tenant(self, tenant: str) -> int:
        folder = self.root.joinpath(*tenant_prefix(tenant).rstrip("/").split("/"))
        if not folder.is_dir():
            return 0
        files = [p for p in folder.rglob("*") if p.is_file()]
        shutil.rmtree(folder)
        return len(files)

    def exists(self, image_id: str, tenant: str | None = None) -> bool:
        return self._path(image_id, tenant).exists()

    def url(self, image_id: str, ttl_seconds: int, tenant: str | None = None) -> str | None:
        blob_key(image_id, tenant)
        return None  # served by the API
