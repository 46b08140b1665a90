"""The result cache over real HTTP: a repeat is answered `cached: true` without the engine."""

from __future__ import annotations

import threading
from collections.abc import Callable

from sdserve.engine.fake import FakeEngine
from sdserve.results.cache import build_result_cache
from sdserve.results.revision import model_revision
from sdserve.worker.loop import Worker
from sdserve.worker.process import worker_config
from tests.integration.live import LiveService

Factory = Callable[..., LiveService]


def test_repeat_with_a_seed_is_answered_from_the_cache(live_factory: Factory) -> None:
    svc = live_factory(result_cache_ttl_seconds=300)
    s = svc.services
    results = build_result_cache(
        s.settings, s.blobs, lambda name: model_revision(s.catalog.get(name))
    )
    assert results is not None
    engine = FakeEngine()
    engine.load()
    worker = Worker(
        s.queue,
        engine,
        s.blobs,
        s.wakeups,
        worker_config(s.settings),
        image_key=s.server_key.image_key,
        results=results,
    )
    thread = threading.Thread(target=worker.run, args=(svc.stop_workers,), daemon=True)
    thread.start()
    svc.worker_threads.append(thread)
    body = {"prompt": "a red circle", "num_inference_steps": 2, "seed": 11, "num_images": 2}
    with svc.client() as c:
        first = c.post("/v1/generate", json=body).json()
        again = c.post("/v1/generate", json=body).json()
        changed = c.post("/v1/generate", json=body | {"guidance_scale": 5}).json()
        job = c.get(f"/v1/jobs/{again['job_id']}").json()
    assert first["cached"] is False and again["cached"] is True and changed["cached"] is False
    assert again["images"] == first["images"] and again["image_ids"] != first["image_ids"]
    assert job["result"]["cached"] is True
    assert len(engine.calls) == 2
    assert results.metrics.value("sdserve_result_cache_hits_total") == 1
    assert (s.settings.data_dir / "result_cache.db").exists()
    results.close()
