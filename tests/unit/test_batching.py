"""select_batch as a pure function: the priority promise and model affinity hold for
any queue (property tests), and the worker hands the engine's models to the claim."""

from __future__ import annotations

import threading
from pathlib import Path

from hypothesis import example, given, settings
from hypothesis import strategies as st

from sdserve.domain.jobs import NewJob
from sdserve.engine.fake import FakeEngine
from sdserve.queue.batching import Affinity, Candidate, select_batch
from sdserve.queue.memory import MemoryQueue
from sdserve.queue.wakeups import LocalWakeupBus
from sdserve.storage.local import LocalBlobStore
from sdserve.testing import job_spec
from sdserve.worker.loop import Worker, WorkerConfig

MODELS = ("a", "b", "c")  # few models and sizes: batch keys often collide


@st.composite
def queues(draw: st.DrawFn) -> list[Candidate]:
    """A queue in claim order (rank, then seq), with random models, sizes and ages."""
    n = draw(st.integers(1, 14))
    rows = [
        (
            draw(st.integers(0, 2)),
            draw(st.sampled_from(MODELS)),
            draw(st.sampled_from(("512", "512", "768"))),
            draw(st.integers(1, 4)),
            draw(st.floats(0, 100)),
            draw(st.booleans()) and draw(st.booleans()),  # solo, rarely
        )
        for _ in range(n)
    ]
    rows.sort(key=lambda r: r[0])  # stable: seq order within a rank
    return [
        Candidate(f"j{i}", rank, f"{model}|{size}", images, created, solo, model)
        for i, (rank, model, size, images, created, solo) in enumerate(rows)
    ]


affinities = st.builds(
    Affinity,
    st.frozensets(st.sampled_from(MODELS), min_size=1, max_size=2),
    st.just(100.0),
    st.sampled_from((0.0, 30.0, 1000.0)),
)


PASSED_OVER = [  # "a" passed over for "b", whose lower-priority twin must stay out
    Candidate("j0", 1, "a|512", 1, 0.0, False, "a"),
    Candidate("j1", 1, "b|512", 1, 0.0, False, "b"),
    Candidate("j2", 2, "b|512", 1, 0.0, False, "b"),
]


@settings(max_examples=300, deadline=None)
@example(PASSED_OVER, 4, Affinity(frozenset({"b"}), 10.0, 30.0))
@given(queues(), st.integers(1, 8), st.none() | affinities)
def test_no_lower_priority_starts_while_a_higher_one_waits(
    queue: list[Candidate], max_images: int, affinity: Affinity | None
) -> None:
    selection = select_batch(queue, max_images, affinity)
    assert selection is not None
    chosen = {c.key for c in selection.chosen}
    head = selection.head
    assert head.rank == queue[0].rank  # affinity never reaches into a lower priority
    for job in selection.chosen:
        assert job.batch_key == head.batch_key
        waiting_better = [w for w in queue if w.key not in chosen and w.rank < job.rank]
        assert not waiting_better, (job, waiting_better)
    if len(selection.chosen) > 1:
        assert selection.images <= max_images and not any(c.solo for c in selection.chosen)


@settings(max_examples=300, deadline=None)
@given(queues(), st.integers(1, 8), affinities)
def test_affinity_rule(queue: list[Candidate], max_images: int, affinity: Affinity) -> None:
    head = select_batch(queue, max_images, affinity).head  # type: ignore[union-attr]
    oldest = queue[0]
    same_rank_held = [c for c in queue if c.rank == oldest.rank and c.model in affinity.models]
    if affinity.passes_over(oldest) and same_rank_held:
        assert head == same_rank_held[0]  # the oldest job of a held model, same priority
    else:
        assert head == oldest


def test_the_worker_prefers_the_models_its_engine_holds(tmp_path: Path) -> None:
    queue = MemoryQueue()
    first, _ = queue.enqueue(NewJob(spec=job_spec(model="other")))
    held, _ = queue.enqueue(NewJob(spec=job_spec(model="held")))
    engine = FakeEngine()
    engine.load()
    engine.generate(  # the engine now holds "held" (and, LRU of one, nothing else)
        _request(queue, held.id), lambda step, total: set()
    )
    assert engine.loaded_models() == ["held"]
    worker = Worker(
        queue,
        engine,
        LocalBlobStore(tmp_path),
        LocalWakeupBus(),
        WorkerConfig(batch_window_s=0),
        image_key=b"k" * 32,
    )
    engine.calls.clear()
    assert worker.run_once() and worker.run_once()
    assert [r.items[0].job_id for r in engine.calls] == [held.id, first.id]
    stop = threading.Event()
    stop.set()
    worker.run(stop)  # flushes


def _request(queue: MemoryQueue, job_id: str):  # type: ignore[no-untyped-def]
    from sdserve.worker.batching import batch_request

    job = queue.get(job_id)
    assert job is not None
    return batch_request([job])
