"""Batch assembly shared by every backend: which queued jobs one claim takes.

Backends hand in the available queued jobs lazily, in claim order (priority rank,
then seq), as light ``Candidate`` tuples; ``select_batch`` stops reading as soon as
no later candidate could join, so a backend never has to scan the whole queue.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

# Upper bound on how many queued jobs one claim looks at when searching companions.
CANDIDATE_SCAN_LIMIT = 256


@dataclass(frozen=True)
class Candidate:
    key: str  # backend handle (job id)
    rank: int  # Priority.rank: smaller runs first
    batch_key: str
    num_images: int
    created_at: float
    solo: bool = False  # must run alone (its last batch died)


@dataclass(frozen=True)
class Selection:
    chosen: list[Candidate]
    images: int

    @property
    def head(self) -> Candidate:
        return self.chosen[0]


def select_batch(candidates: Iterable[Candidate], max_images: int) -> Selection | None:
    """Pick the head (first candidate) and the compatible companions that fit.

    A companion joins only if no job of a better priority than its own is left
    waiting outside the batch: once a job of rank r is skipped, nothing of a rank
    worse than r may join (the priority promise). Same-rank jobs may overtake a
    skipped one of their own rank; FIFO is promised for the head only. A ``solo`` job
    neither takes nor joins companions.
    """
    chosen: list[Candidate] = []
    images = 0
    worst_joinable_rank: int | None = None  # lowered to a skipped job's rank
    for cand in candidates:
        if not chosen:
            chosen.append(cand)
            images = cand.num_images
            if cand.solo:
                break
            continue
        if images >= max_images:
            break
        if worst_joinable_rank is not None and cand.rank > worst_joinable_rank:
            break  # every later candidate ranks at least as badly: none can join
        fits = images + cand.num_images <= max_images
        if cand.batch_key == chosen[0].batch_key and fits and not cand.solo:
            chosen.append(cand)
            images += cand.num_images
        elif worst_joinable_rank is None or cand.rank < worst_joinable_rank:
            worst_joinable_rank = cand.rank
    if not chosen:
        return None
    return Selection(chosen, images)


def window_wait(selection: Selection, max_images: int, window: float, now: float) -> float:
    """Seconds to wait for more companions (0: claim now). Only a batch that is not
    full and whose head is younger than the window waits."""
    if window <= 0 or selection.images >= max_images:
        return 0.0
    left = selection.head.created_at + window - now
    return left if left > 0 else 0.0
