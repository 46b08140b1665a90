"""The one exception the imaging internals raise; the public functions turn it into
``InvalidRequest`` naming the client's field, which only they know."""

from __future__ import annotations

from typing import Any


class ImageProblem(ValueError):
    def __init__(self, message: str, limit: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.limit = limit
