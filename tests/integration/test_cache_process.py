"""`sdserve serve` with the result cache and worker metrics on: the real process wiring."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from sdserve.testing import ServeProcess, free_port

pytestmark = pytest.mark.slow


def test_a_repeat_is_cached_and_counted_on_the_worker_metrics_port(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    metrics_port = free_port()
    serve = ServeProcess(
        tmp_path / "data",
        model=str(tiny_model_dir),
        result_cache_ttl_seconds="300",
        worker_metrics_port=str(metrics_port),
        webhook_secret="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    )
    try:
        serve.wait_ready()
        body = {"prompt": "a red circle", "num_inference_steps": 2, "seed": 3}
        with httpx.Client(base_url=serve.url, timeout=60) as c:
            first = c.post("/v1/generate", json=body).json()
            again = c.post("/v1/generate", json=body).json()
        assert first["cached"] is False and again["cached"] is True
        assert again["images"] == first["images"]
        deadline = time.monotonic() + 10
        while True:
            text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text
            if "sdserve_result_cache_hits_total 1.0" in text:
                break
            assert time.monotonic() < deadline, text
            time.sleep(0.1)
        assert "sdserve_model_loads_total 1.0" in text
        assert (tmp_path / "data" / "result_cache.db").exists()
    finally:
        serve.stop()
