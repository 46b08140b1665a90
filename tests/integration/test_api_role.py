"""`sdserve api` loads no model and needs no models folder: it offers what the live
workers publish in the registry (real processes over Redis)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from sdserve.testing import ServeProcess, free_port

pytestmark = pytest.mark.slow


def test_api_offers_the_models_its_workers_publish(
    tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    env = {
        "queue_backend": "redis",
        "redis_url": redis_url,
        "redis_prefix": redis_prefix,
        "images_dir": str(tmp_path / "bucket"),
        "secret_key": "test-secret-key-shared-by-every-node-0123",
        "engine": "fake",
    }
    port = free_port()
    # No model configured and a models folder that does not exist: nothing to load.
    api = ServeProcess(
        tmp_path / "api-node", port, command="api", models_dir=str(tmp_path / "absent"), **env
    )
    worker = None
    try:
        with httpx.Client(base_url=api.url, timeout=60) as c:
            for _ in range(600):  # /readyz waits for a worker: the API is up when healthy
                try:
                    if c.get("/healthz").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert api.proc.poll() is None, api.log_path.read_text()[-2000:]
                time.sleep(0.1)
            early = c.post("/v1/generate", json={"prompt": "x", "num_inference_steps": 2})
            assert early.status_code == 503 and early.json()["error"]["type"] == "not_ready"
            worker = ServeProcess(tmp_path / "gpu-node", port, command="worker", **env)
            for _ in range(300):
                r = c.get("/v1/models")
                if r.status_code == 200 and r.json()["data"]:
                    break
                assert worker.proc.poll() is None, worker.log_path.read_text()[-2000:]
                time.sleep(0.1)
            models = r.json()["data"]
            assert [(m["name"], m["default"]) for m in models] == [("fake", True)]
            done = c.post("/v1/generate", json={"prompt": "x", "num_inference_steps": 2})
            assert done.status_code == 200, done.text
            assert done.json()["parameters"]["model"] == "fake"
            wrong = c.post("/v1/generate", json={"prompt": "x", "model": "sdxl"})
            assert wrong.status_code == 422
            assert wrong.json()["error"]["fields"][0]["field"] == "model"
    finally:
        api.stop()
        if worker is not None:
            worker.stop()
    assert not (tmp_path / "absent").exists()
    assert "loading model" not in api.log_path.read_text()
