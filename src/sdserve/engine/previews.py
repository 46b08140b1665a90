"""Live previews: how an engine hands in-progress images to whoever asked for them.

Torch-free. A step callback may carry a ``previews`` attribute (a PreviewSink); an
engine that can make cheap previews sends one per job (its first image) at most every
``sink.every_s`` seconds. No sink, no preview work at all.
"""

from __future__ import annotations

import time
from typing import Protocol

from PIL import Image

from sdserve.engine.base import BatchRequest, StepCallback


class PreviewSink(Protocol):
    every_s: float  # > 0: at most one preview per this many seconds

    def __call__(self, job_id: str, image: Image.Image) -> None: ...


def preview_sink(on_step: StepCallback) -> PreviewSink | None:
    """The preview receiver ``on_step`` carries, or None (previews off)."""
    sink: PreviewSink | None = getattr(on_step, "previews", None)
    if sink is None or sink.every_s <= 0:
        return None
    return sink


class PreviewClock:
    """Says when the next preview is due (the first step's, then every ``every_s``)."""

    def __init__(self, sink: PreviewSink) -> None:
        self.sink = sink
        self._last = float("-inf")

    def due(self) -> bool:
        now = time.monotonic()
        if now - self._last < self.sink.every_s:
            return False
        self._last = now
        return True


def first_rows(req: BatchRequest) -> dict[str, int]:
    """Each job's first image row in the batch (what its preview shows)."""
    rows: dict[str, int] = {}
    row = 0
    for item in req.items:
        rows[item.job_id] = row
        row += len(item.seeds)
    return rows
