"""The native API end to end over real HTTP: sync, async, cancel, priority, idempotency."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.integration.live import LiveService

Factory = Callable[..., LiveService]


def _tiny_engine(svc: LiveService) -> Any:
    from sdserve.engine.pipelines import DiffusersEngine

    return DiffusersEngine(svc.services.settings, svc.services.catalog)


def _slow_engine(step_delay: float) -> Any:
    from sdserve.engine.fake import FakeEngine

    return FakeEngine(step_delay=step_delay)


@pytest.mark.parametrize(
    ("fmt", "pil_format"), [("png", "PNG"), ("jpeg", "JPEG"), ("webp", "WEBP")]
)
def test_sync_generate_returns_decodable_images(
    live_factory: Factory, fmt: str, pil_format: str
) -> None:
    svc = live_factory()
    svc.start_workers(_tiny_engine(svc))
    body = {
        "prompt": "a red circle",
        "width": 64,
        "height": 96,
        "num_inference_steps": 3,
        "num_images": 2,
        "seed": 41,
        "output_format": fmt,
    }
    with svc.client() as c:
        r = c.post("/v1/generate", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert len(out["images"]) == 2
    for b64 in out["images"]:
        img = Image.open(io.BytesIO(base64.b64decode(b64)))
        assert img.format == pil_format
        assert img.size == (64, 96)
    assert out["seed_used"] == 41
    assert out["seeds"] == [41, 42]
    assert out["generation_time"] > 0
    params = out["parameters"]
    # every effective value, defaults included
    for key, value in {
        "guidance_scale": 7.5,
        "scheduler": "pndm",  # the tiny model ships PNDM, as SD 1.5 does
        "model": "tiny",
        "priority": "normal",
        "negative_prompt": "",
        "width": 64,
        "height": 96,
    }.items():
        assert params[key] == value, key
    assert out["job_id"].startswith("job_")


def test_defaults_come_from_the_model(live_factory: Factory) -> None:
    svc = live_factory()
    svc.start_workers(_tiny_engine(svc))
    with svc.client() as c:
        out = c.post("/v1/generate", json={"prompt": "x", "num_inference_steps": 1}).json()
    assert (out["parameters"]["width"], out["parameters"]["height"]) == (64, 64)
    assert 0 <= out["seed_used"] < 2**32


def test_async_submit_poll_and_fetch_images(live_factory: Factory) -> None:
    svc = live_factory()
    with svc.client() as c:
        body = {"prompt": "a blue square", "num_inference_steps": 2, "scheduler": "euler_a"}
        r = c.post("/v1/jobs", json=body)
        assert r.status_code == 202
        job = r.json()
        assert job["status"] == "queued"
        assert job["queue_position"] == 0
        assert r.headers["location"] == f"/v1/jobs/{job['id']}"
        svc.start_workers(_tiny_engine(svc))
        done = svc.wait_status(job["id"], {"succeeded", "failed"})
        assert done["status"] == "succeeded", done
        assert done["progress"] == {"step": 2, "total": 2}
        assert done["started_at"] and done["finished_at"]
        image = done["result"]["images"][0]
        got = c.get(image["url"])
        assert got.status_code == 200
        assert got.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(got.content)).size == (64, 64)
        listed = c.get("/v1/jobs", params={"status": "succeeded"}).json()
        assert [j["id"] for j in listed["data"]] == [job["id"]]


def test_cancel_queued_job(live_factory: Factory) -> None:
    svc = live_factory()  # no worker: the job stays queued
    with svc.client() as c:
        job = c.post("/v1/jobs", json={"prompt": "x"}).json()
        r = c.delete(f"/v1/jobs/{job['id']}")
        assert r.status_code == 200
        assert r.json()["status"] == "canceled"
        svc.start_workers(_slow_engine(0.0))
        time.sleep(0.2)
        assert c.get(f"/v1/jobs/{job['id']}").json()["status"] == "canceled"


def test_cancel_running_job_stops_at_next_step_batch_mates_unaffected(
    live_factory: Factory,
) -> None:
    svc = live_factory(max_batch_images=4, batch_window_ms=200)
    with svc.client() as c:
        body = {"prompt": "x", "num_inference_steps": 50, "seed": 1}
        victim = c.post("/v1/jobs", json=body).json()
        mate = c.post("/v1/jobs", json={**body, "prompt": "y"}).json()
        svc.start_workers(_slow_engine(0.05))
        svc.wait_status(victim["id"], {"running"})
        assert c.get(f"/v1/jobs/{mate['id']}").json()["status"] == "running"  # same batch
        r = c.delete(f"/v1/jobs/{victim['id']}")
        assert r.status_code in (200, 202)
        canceled = svc.wait_status(victim["id"], {"canceled", "succeeded"}, timeout=5)
        assert canceled["status"] == "canceled"
        assert canceled["progress"]["step"] < 50
        finished = svc.wait_status(mate["id"], {"succeeded", "failed", "canceled"})
        assert finished["status"] == "succeeded"
        assert finished["progress"] == {"step": 50, "total": 50}


def test_priority_order_behind_a_busy_worker(live_factory: Factory) -> None:
    svc = live_factory(max_batch_images=1)
    svc.start_workers(_slow_engine(0.02))
    with svc.client() as c:
        blocker = c.post("/v1/jobs", json={"prompt": "busy", "num_inference_steps": 25}).json()
        svc.wait_status(blocker["id"], {"running"})
        ids: dict[str, str] = {}
        for name, prio in [
            ("low1", "low"),
            ("normal1", "normal"),
            ("high1", "high"),
            ("low2", "low"),
            ("high2", "high"),
            ("normal2", "normal"),
        ]:
            body = {"prompt": name, "priority": prio, "num_inference_steps": 2}
            ids[name] = c.post("/v1/jobs", json=body).json()["id"]
        positions = {n: c.get(f"/v1/jobs/{i}").json()["queue_position"] for n, i in ids.items()}
        assert positions == {
            "high1": 0,
            "high2": 1,
            "normal1": 2,
            "normal2": 3,
            "low1": 4,
            "low2": 5,
        }
        for i in ids.values():
            svc.wait_status(i, {"succeeded"})
        started = {n: c.get(f"/v1/jobs/{i}").json()["started_at"] for n, i in ids.items()}
    order = sorted(started, key=lambda n: started[n])
    assert order == ["high1", "high2", "normal1", "normal2", "low1", "low2"]


def test_idempotency_key(live_factory: Factory) -> None:
    svc = live_factory()
    body = {"prompt": "same", "seed": 3}
    with svc.client() as c:
        first = c.post("/v1/jobs", json=body, headers={"Idempotency-Key": "k-1"})
        again = c.post("/v1/jobs", json=body, headers={"Idempotency-Key": "k-1"})
        assert first.status_code == again.status_code == 202
        assert first.json()["id"] == again.json()["id"]
        assert again.headers.get("idempotent-replayed") == "true"
        other = c.post("/v1/jobs", json={**body, "seed": 4}, headers={"Idempotency-Key": "k-1"})
        assert other.status_code == 422
        assert other.json()["error"]["type"] == "idempotency_conflict"
        fresh = c.post("/v1/jobs", json=body, headers={"Idempotency-Key": "k-2"})
        assert fresh.json()["id"] != first.json()["id"]
        # a random seed is drawn once: the replay returns the same job and seed
        unseeded = {"prompt": "no seed"}
        a = c.post("/v1/jobs", json=unseeded, headers={"Idempotency-Key": "k-3"}).json()
        b = c.post("/v1/jobs", json=unseeded, headers={"Idempotency-Key": "k-3"}).json()
        assert a["parameters"]["seed"] == b["parameters"]["seed"]


def test_sync_timeout_names_the_job_to_poll(live_factory: Factory) -> None:
    svc = live_factory(sync_timeout_seconds=0.3)
    with svc.client() as c:  # no worker: the job cannot finish
        r = c.post("/v1/generate", json={"prompt": "x"})
        assert r.status_code == 504
        err = r.json()["error"]
        assert err["type"] == "generation_timeout"
        assert c.get(f"/v1/jobs/{err['job_id']}").json()["status"] == "queued"


def test_models_health_ready(live_factory: Factory) -> None:
    svc = live_factory()
    with svc.client() as c:
        assert c.get("/healthz").json()["status"] == "ok"
        assert c.get("/readyz").status_code == 503
        svc.start_workers(_slow_engine(0.0))
        assert c.get("/readyz").status_code == 200
        models = c.get("/v1/models").json()["data"]
        assert models[0]["name"] == "tiny" and models[0]["default"]
        assert c.get("/openapi.json").json()["paths"]["/v1/jobs"]
        assert c.get("/docs").status_code == 200


def test_healthz_answers_while_a_batch_runs(live_factory: Factory) -> None:
    svc = live_factory()
    svc.start_workers(_slow_engine(0.05))
    with svc.client() as c:
        job = c.post("/v1/jobs", json={"prompt": "x", "num_inference_steps": 40}).json()
        svc.wait_status(job["id"], {"running"})
        for _ in range(5):
            assert c.get("/healthz").status_code == 200
        assert c.get(f"/v1/jobs/{job['id']}").json()["status"] == "running"


def test_concurrent_sync_requests_are_batched(live_factory: Factory) -> None:
    svc = live_factory(max_batch_images=4, batch_window_ms=300)
    svc.start_workers(_slow_engine(0.0))
    results: list[dict[str, Any]] = []

    def call(i: int) -> None:
        with httpx.Client(base_url=svc.url, timeout=30) as c:
            body = {"prompt": f"p{i}", "seed": i, "num_inference_steps": 2}
            results.append(c.post("/v1/generate", json=body).json())

    threads = [threading.Thread(target=call, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 4 and all(len(r["images"]) == 1 for r in results)
    assert svc.workers[0].batches_done < 4


def test_metrics_expose_traffic_errors_and_queue_depth(live_factory: Factory) -> None:
    svc = live_factory()  # no worker: jobs stay queued
    with svc.client() as c:
        c.post("/v1/jobs", json={"prompt": "x", "priority": "high"})
        c.post("/v1/jobs", json={"prompt": "x", "width": 7})
        text = c.get("/metrics").text
    assert 'sdserve_queue_depth{priority="high"} 1.0' in text
    assert 'sdserve_jobs_submitted_total{priority="high"} 1.0' in text
    assert 'sdserve_errors_total{type="validation_error"} 1.0' in text
    assert 'route="/v1/jobs",status="202"' in text
    assert "sdserve_workers_ready 0.0" in text


def test_job_events_stream_progress_until_terminal(live_factory: Factory) -> None:
    svc = live_factory()
    svc.start_workers(_slow_engine(0.02))
    with svc.client() as c:
        job = c.post("/v1/jobs", json={"prompt": "x", "num_inference_steps": 30}).json()
        statuses: list[str] = []
        steps: list[int] = []
        with c.stream("GET", f"/v1/jobs/{job['id']}/events") as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            for line in r.iter_lines():
                if line.startswith("data: "):
                    view = json.loads(line[6:])
                    statuses.append(view["status"])
                    steps.append(view["progress"]["step"])
        assert statuses[-1] == "succeeded"
        assert "running" in statuses
        assert steps == sorted(steps) and steps[-1] == 30
        assert c.get("/v1/jobs/job_nope/events").status_code == 404
