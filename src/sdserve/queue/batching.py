"""Batch assembly shared by every backend: which queued jobs one claim takes.

Backends hand in the available queued jobs lazily, in claim order (priority rank,
then seq), as light ``Candidate`` tuples; ``select_batch`` stops reading as soon as
no later candidate could join, so a backend never has to scan the whole queue.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

# Upper bound on how many queued jobs one claim looks at when searching companions.
CANDIDATE_SCAN_LIMIT = 256

# Model affinity may let a same-priority job of a loaded model overtake the oldest job
# for this long at most (SDSERVE_AFFINITY_MAX_WAIT_MS); past it the oldest job goes
# first whatever model it needs, so no job starves.
DEFAULT_AFFINITY_MAX_WAIT_S = 2.0


@dataclass(frozen=True)
class Candidate:
    key: str  # backend handle (job id)
    rank: int  # Priority.rank: smaller runs first
    batch_key: str
    num_images: int
    created_at: float
    solo: bool = False  # must run alone (its last batch died)
    model: str = ""


@dataclass(frozen=True)
class Affinity:
    """A worker's preference for jobs of the models it already holds."""

    models: frozenset[str] = frozenset()
    now: float = 0.0
    max_wait: float = DEFAULT_AFFINITY_MAX_WAIT_S

    def passes_over(self, oldest: Candidate) -> bool:
        """May a younger same-priority job overtake ``oldest``?"""
        return (
            bool(self.models)
            and self.max_wait > 0
            and oldest.model not in self.models
            and self.now - oldest.created_at <= self.max_wait
        )


@dataclass(frozen=True)
class Selection:
    chosen: list[Candidate]
    images: int

    @property
    def head(self) -> Candidate:
        return self.chosen[0]


def select_batch(
    candidates: Iterable[Candidate], max_images: int, affinity: Affinity | None = None
) -> Selection | None:
    """Pick the head and the compatible companions that fit.

    The head is the first candidate (the oldest job of the best priority), except
    that with an ``affinity`` whose models do not include the head's, the first job
    of the SAME priority for one of those models heads the batch instead, as long as
    the first candidate has not waited longer than ``affinity.max_wait``. A lower
    priority never overtakes.

    A companion joins only if no job of a better priority than its own is left
    waiting outside the batch: once a job of rank r is skipped, nothing of a rank
    worse than r may join (the priority promise). Same-rank jobs may overtake a
    skipped one of their own rank. A ``solo`` job neither takes nor joins companions.
    """
    stream = iter(candidates)
    first = next(stream, None)
    if first is None:
        return None
    head, rest, passed_over = first, stream, False
    if affinity is not None and affinity.passes_over(first):
        head, rest, passed_over = _preferred_head(first, stream, affinity)
    chosen = [head]
    images = head.num_images
    if head.solo:
        return Selection(chosen, images)
    # Jobs passed over for a preferred head wait with the head's rank.
    worst_joinable_rank: int | None = head.rank if passed_over else None
    for cand in rest:
        if images >= max_images:
            break
        if worst_joinable_rank is not None and cand.rank > worst_joinable_rank:
            break  # every later candidate ranks at least as badly: none can join
        fits = images + cand.num_images <= max_images
        if cand.batch_key == head.batch_key and fits and not cand.solo:
            chosen.append(cand)
            images += cand.num_images
        elif worst_joinable_rank is None or cand.rank < worst_joinable_rank:
            worst_joinable_rank = cand.rank
    return Selection(chosen, images)


def _preferred_head(
    first: Candidate, stream: Iterator[Candidate], affinity: Affinity
) -> tuple[Candidate, Iterator[Candidate], bool]:
    """(head, the candidates after it, whether jobs were passed over).

    The jobs read before a preferred one are all of ``first``'s rank and of models the
    worker does not hold, so none shares the preferred head's batch key (the model is
    part of it): they cannot be companions, only blockers of worse ranks."""
    read: list[Candidate] = []
    for cand in stream:
        if cand.rank != first.rank:
            read.append(cand)
            break
        if cand.model in affinity.models:
            return cand, stream, True
        read.append(cand)
    # No same-priority job of a held model: the oldest job heads as usual.
    return first, itertools.chain(read, stream), False


def window_wait(selection: Selection, max_images: int, window: float, now: float) -> float:
    """Seconds to wait for more companions (0: claim now). Only a batch that is not
    full and whose head is younger than the window waits."""
    if window <= 0 or selection.images >= max_images:
        return 0.0
    left = selection.head.created_at + window - now
    return left if left > 0 else 0.0
