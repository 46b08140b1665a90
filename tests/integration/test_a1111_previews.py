"""Live previews through A1111's /sdapi/v1/progress ``current_image``: a running job
shows a PNG of its size, only to its own tenant, none once it ends and never while
an image checker is configured (a preview is an unchecked image)."""

from __future__ import annotations

import base64
import io
import threading
import time
from collections.abc import Callable
from typing import Any

import webuiapi
from PIL import Image

from sdserve.domain.previews import preview_id
from sdserve.engine.fake import FakeEngine
from sdserve.security.keys import Role
from tests.integration.live import LiveService
from tests.integration.test_a1111_facade import api_for
from tests.integration.test_safety_http import checker_flagging

Factory = Callable[..., LiveService]


def _run_slow(api: webuiapi.WebUIApi, results: list[Any]) -> threading.Thread:
    thread = threading.Thread(
        target=lambda: results.append(api.txt2img(prompt="slow", steps=100, width=64, height=96))
    )
    thread.start()
    return thread


def _poll(api: webuiapi.WebUIApi, done: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    progress: dict[str, Any] = {}
    while time.monotonic() < deadline:
        progress = api.get_progress()
        if done(progress):
            return progress
        time.sleep(0.02)
    raise AssertionError(f"progress never got there: {progress}")


def test_running_job_shows_its_preview_to_its_tenant_only(live_factory: Factory) -> None:
    svc = live_factory(auth="on", preview_every_s=0.05)
    svc.start_workers(FakeEngine(step_delay=0.05))
    api = api_for(svc, svc.services.keys.create("acme", Role.user).key)
    other = api_for(svc, svc.services.keys.create("beta", Role.user).key)
    results: list[Any] = []
    thread = _run_slow(api, results)
    progress = _poll(api, lambda p: p["current_image"] is not None)
    image = Image.open(io.BytesIO(base64.b64decode(progress["current_image"])))
    assert image.format == "PNG" and image.size == (64, 96)
    job_id = progress["state"]["job"]
    job = svc.services.queue.get(job_id)
    assert job is not None and job.status.value == "running"
    ident = preview_id(job_id, svc.services.server_key.image_key)
    assert svc.services.blobs.get(ident, tenant=job.owner) is not None
    # Another tenant sees no job, no preview, and cannot fetch it by id either.
    theirs = other.get_progress()
    assert theirs["state"]["job"] == "" and theirs["current_image"] is None
    assert svc.services.blobs.get(ident, tenant="beta") is None
    with svc.client() as c:
        beta_key = svc.services.keys.create("beta", Role.user).key
        r = c.get(f"/v1/images/{ident}", headers={"Authorization": f"Bearer {beta_key}"})
        assert r.status_code == 404
    # Ended (interrupted): no preview is reported and its blob is gone.
    assert len(api.interrupt()["interrupted"]) == 1
    thread.join(timeout=30)
    assert results and results[0].info["interrupted"] is True
    deadline = time.monotonic() + 10
    while svc.services.blobs.get(ident, tenant=job.owner) is not None:
        assert time.monotonic() < deadline, "the preview outlived its job"
        time.sleep(0.02)
    ended = svc.services.queue.get(job_id)
    assert ended is not None and ended.status.value == "canceled"
    assert api.get_progress()["current_image"] is None
    # Succeeded: its preview is gone by the time its result is there.
    done = api.txt2img(prompt="quick", steps=20, width=64, height=64)
    assert len(done.images) == 1
    ident = preview_id(done.info["sdserve"]["job_id"], svc.services.server_key.image_key)
    assert svc.services.blobs.get(ident, tenant=job.owner) is None


def test_no_preview_ever_with_an_image_checker(live_factory: Factory) -> None:
    svc = live_factory(auth="on", preview_every_s=0.01, image_checker="model")
    svc.start_workers(FakeEngine(step_delay=0.02), checker=checker_flagging("slow", 0))
    api = api_for(svc, svc.services.keys.create("acme", Role.user).key)
    results: list[Any] = []
    thread = _run_slow(api, results)
    seen: list[Any] = []
    progress = _poll(api, lambda p: seen.append(p["current_image"]) or p["progress"] > 0.5)
    assert progress["state"]["sampling_steps"] == 100
    assert set(seen) == {None}
    job = svc.services.queue.get(progress["state"]["job"])
    assert job is not None
    ident = preview_id(job.id, svc.services.server_key.image_key)
    assert svc.services.blobs.get(ident, tenant=job.owner) is None
    api.interrupt()
    thread.join(timeout=30)
