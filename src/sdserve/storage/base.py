"""BlobStore: where finished images live, addressed by opaque ids (never paths)."""

from __future__ import annotations

import re
from typing import Protocol

# Image ids are produced by domain.jobs.image_id: 32 hex chars and a format suffix.
IMAGE_ID_RE = re.compile(r"^[0-9a-f]{32}\.(png|jpeg|webp)$")


def valid_image_id(image_id: str) -> bool:
    return bool(IMAGE_ID_RE.match(image_id))


class BlobStore(Protocol):
    def put(self, image_id: str, data: bytes) -> None:
        """Write atomically; writing the same id twice replaces it (idempotent)."""
        ...

    def get(self, image_id: str) -> bytes | None: ...

    def delete(self, image_id: str) -> bool: ...

    def exists(self, image_id: str) -> bool: ...
