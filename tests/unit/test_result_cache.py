"""The result cache in the worker: a hit skips the engine, any change misses, tenants and
the TTL hold; SQLite and Redis stores."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from sdserve.domain.jobs import Job, JobStatus, NewJob
from sdserve.domain.requests import LoraRef, OutputFormat, Priority
from sdserve.queue.memory import MemoryQueue
from sdserve.queue.wakeups import LocalWakeupBus
from sdserve.results.cache import ResultCache
from sdserve.results.store import CachedResult, RedisResultStore, SqliteResultStore
from sdserve.storage.local import LocalBlobStore
from sdserve.testing import job_spec
from sdserve.worker.loop import Worker, WorkerConfig
from tests.unit.test_worker import ScriptedEngine

KEY = b"k" * 32
TTL = 60.0


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


class Rig:
    def __init__(self, tmp_path: Path) -> None:
        self.queue = MemoryQueue()
        self.engine = ScriptedEngine()
        self.blobs = LocalBlobStore(tmp_path / "images")
        self.clock = Clock()
        self.revisions = {"tiny": "sha256:aaa", "other": "sha256:bbb"}
        self.adapters = {"style": "sha256:s1"}
        self.cache = ResultCache(
            SqliteResultStore(tmp_path / "result_cache.db"),
            TTL,
            self.blobs,
            lambda model: self.revisions[model],
            clock=self.clock,
            adapter_revision_of=lambda name: self.adapters[name],
        )
        config = WorkerConfig(max_batch_images=1, batch_window_s=0, retry_delay_s=0)
        self.worker = Worker(
            self.queue,
            self.engine,
            self.blobs,
            LocalWakeupBus(),
            config,
            image_key=KEY,
            results=self.cache,
        )

    def run(self, owner: str | None = "t1", **spec: Any) -> Job:
        spec.setdefault("seed", 5)
        job, _ = self.queue.enqueue(NewJob(spec=job_spec(**spec), owner=owner))
        assert self.worker.run_once()
        done = self.queue.get(job.id)
        assert done is not None and done.status is JobStatus.succeeded, done
        return done

    def hits(self) -> float:
        return self.cache.metrics.value("sdserve_result_cache_hits_total")


def _images(rig: Rig, job: Job) -> list[bytes | None]:
    assert job.result is not None
    return [rig.blobs.get(im.id, tenant=job.owner) for im in job.result.images]


def test_a_hit_skips_the_engine_and_copies_the_images(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    first = rig.run(num_images=2)
    again = rig.run(num_images=2, priority=Priority.high)  # priority is not drawn
    assert len(rig.engine.ran) == 1 and rig.hits() == 1
    assert first.result is not None and again.result is not None
    assert not first.result.cached and again.result.cached
    assert again.public()["result"]["cached"] is True
    assert [im.seed for im in again.result.images] == [5, 6]
    assert {im.id for im in again.result.images}.isdisjoint(im.id for im in first.result.images)
    assert _images(rig, again) == _images(rig, first)
    # The first job's images purged (retention): the copies still stand, and the entry
    # that pointed at the originals is a miss, run again and stored anew.
    for im in first.result.images:
        rig.blobs.delete(im.id, tenant="t1")
    assert all(_images(rig, again))
    third = rig.run(num_images=2)
    assert third.result is not None and not third.result.cached
    assert rig.run(num_images=2).result.cached  # type: ignore[union-attr]
    assert len(rig.engine.ran) == 2 and rig.hits() == 2


CHANGES: list[dict[str, Any]] = [
    {"prompt": "q"},
    {"negative_prompt": "blurry"},
    {"width": 128},
    {"height": 128},
    {"num_inference_steps": 3},
    {"guidance_scale": 7.0},
    {"seed": 6},
    {"num_images": 2},
    {"scheduler": "ddim"},
    {"model": "other"},
    {"output_format": OutputFormat.webp},
    {"loras": (LoraRef(name="style"),)},
    {"loras": (LoraRef(name="style", scale=0.5),)},
]


def test_any_changed_parameter_misses(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.run()
    for i, change in enumerate(CHANGES):
        job = rig.run(**change)
        assert job.result is not None and not job.result.cached, change
        assert len(rig.engine.ran) == i + 2, change
    rig.revisions["tiny"] = "sha256:new-weights"  # the model file changed
    assert rig.run().result.cached is False  # type: ignore[union-attr]
    assert rig.hits() == 0


def test_editing_inputs_count_by_their_bytes(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    ids = {n: uuid.uuid4().hex + ".png" for n in ("in1", "in2", "in3", "gone")}
    for name, data in (("in1", b"A"), ("in2", b"A"), ("in3", b"B")):
        rig.blobs.put(ids[name], data, tenant="t1")
    edit = {"task": "img2img", "strength": 0.5}
    k1 = rig.cache.key(Job.model_validate(_job(ids["in1"], edit)))
    k2 = rig.cache.key(Job.model_validate(_job(ids["in2"], edit)))
    k3 = rig.cache.key(Job.model_validate(_job(ids["in3"], edit)))
    assert k1 == k2 != k3 and k1 is not None
    assert rig.cache.key(Job.model_validate(_job(ids["gone"], edit))) is None


def _job(image: str, extra: dict[str, Any]) -> dict[str, Any]:
    spec = job_spec(image=image, **extra)
    now = time.time()
    return {
        "id": "job_x",
        "spec": spec,
        "status": "running",
        "created_at": now,
        "updated_at": now,
        "owner": "t1",
    }


def test_tenants_never_share_results(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.run(owner="t1")
    other = rig.run(owner="t2")
    assert other.result is not None and not other.result.cached
    assert rig.run(owner=None).result.cached is False  # type: ignore[union-attr]
    assert rig.run(owner="t2").result.cached is True  # type: ignore[union-attr]
    assert len(rig.engine.ran) == 3


def test_entries_expire_after_the_ttl(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.run()
    rig.clock.now += TTL - 1
    assert rig.run().result.cached is True  # type: ignore[union-attr]
    rig.clock.now += 2  # past the first entry's TTL (a hit does not extend it)
    assert rig.run().result.cached is False  # type: ignore[union-attr]
    assert len(rig.engine.ran) == 2


def test_redis_store_round_trip_and_expiry(redis_url: str, redis_prefix: str) -> None:
    store = RedisResultStore.from_url(redis_url, redis_prefix)
    value = CachedResult([("img_1.png", 7)], ["w"])
    store.put("k", value, now=0, ttl=0.2)
    assert store.get("k", now=0) == value
    assert store.get("other", now=0) is None
    time.sleep(0.3)  # Redis' own clock expires it
    assert store.get("k", now=0) is None
    store.close()


@pytest.mark.parametrize("ttl", [0])
def test_off_by_default(ttl: float, tmp_path: Path) -> None:
    from sdserve.config import Settings
    from sdserve.results.cache import build_result_cache

    settings = Settings(data_dir=tmp_path, result_cache_ttl_seconds=ttl)
    assert Settings(data_dir=tmp_path).result_cache_ttl_seconds == 0
    assert build_result_cache(settings, LocalBlobStore(tmp_path), lambda m: m) is None
    assert not (tmp_path / "result_cache.db").exists()


def test_a_replaced_adapter_file_misses(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    styled = {"loras": (LoraRef(name="style"),)}
    rig.run(**styled)
    assert rig.run(**styled).result.cached is True  # type: ignore[union-attr]
    rig.adapters["style"] = "sha256:s2"
    assert rig.run(**styled).result.cached is False  # type: ignore[union-attr]


def test_the_redis_backend_keeps_results_in_redis(
    redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    from sdserve.config import Settings
    from sdserve.results.cache import build_result_cache

    settings = Settings(
        data_dir=tmp_path,
        queue_backend="redis",
        redis_url=redis_url,
        redis_prefix=redis_prefix,
        result_cache_ttl_seconds=30,
    )
    cache = build_result_cache(settings, LocalBlobStore(tmp_path), lambda m: m)
    assert cache is not None and isinstance(cache.store, RedisResultStore)
    cache.store.put("k", CachedResult([("a.png", 1)]), now=0, ttl=30)
    assert cache.store.get("k", now=0) == CachedResult([("a.png", 1)])
    assert not (tmp_path / "result_cache.db").exists()
    cache.close()
