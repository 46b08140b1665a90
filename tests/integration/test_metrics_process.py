"""Metrics present and moving after a job: the API's /metrics and the worker's own
port (`serve` gives worker i SDSERVE_WORKER_METRICS_PORT + i), real processes."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from sdserve.testing import ServeProcess, free_port

pytestmark = pytest.mark.slow


def _value(text: str, sample: str) -> float:
    match = re.search(rf"^{re.escape(sample)} (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


def test_api_and_worker_metrics_move_after_a_job(tmp_path: Path) -> None:
    worker_port = free_port()
    serve = ServeProcess(
        tmp_path / "data", engine="fake", fake_step_ms="5", worker_metrics_port=str(worker_port)
    )
    try:
        serve.wait_ready(timeout=60)
        worker_url = f"http://127.0.0.1:{worker_port}"
        assert httpx.get(worker_url + "/healthz").status_code == 200
        assert httpx.get(worker_url + "/readyz").json() == {"ready": True}
        before = httpx.get(worker_url + "/metrics").text
        r = httpx.post(
            serve.url + "/v1/generate",
            json={"prompt": "metrics", "num_images": 2, "num_inference_steps": 3},
            timeout=60,
        )
        assert r.status_code == 200, r.text
        api = httpx.get(serve.url + "/metrics").text
        after = httpx.get(worker_url + "/metrics").text
    finally:
        serve.stop()
    model = r.json()["parameters"]["model"]
    assert _value(api, 'sdserve_jobs_submitted_total{priority="normal"}') == 1
    assert "sdserve_queue_depth" in api and "sdserve_webhook_deliveries_total" in api
    for sample, moved_by in (
        ('sdserve_jobs_finished_total{status="succeeded"}', 1),
        (f'sdserve_images_generated_total{{model="{model}"}}', 2),
        ("sdserve_step_seconds_count", 3),
        (f'sdserve_generation_seconds_count{{model="{model}",task="txt2img"}}', 1),
        ('sdserve_queue_wait_seconds_count{priority="normal"}', 1),
    ):
        assert _value(after, sample) - _value(before, sample) == moved_by, sample
    assert _value(after, 'sdserve_model_load_seconds_count{model="fake"}') == 1
    assert _value(after, "sdserve_worker_ready") == 1
