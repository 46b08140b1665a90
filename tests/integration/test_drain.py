"""SIGTERM of `sdserve serve`: it drains, answers a waiting /v1/generate with its result
or a 503 `shutting_down` in the error shape, stops its workers and exits 0."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from sdserve.testing import ServeProcess

pytestmark = pytest.mark.slow


def _generate(url: str, steps: int, out: dict[str, Any]) -> None:
    body = {"prompt": "drain", "num_inference_steps": steps, "seed": 1}
    r = httpx.post(url + "/v1/generate", json=body, timeout=60)
    out["status"] = r.status_code
    out["body"] = r.json()


def _running(url: str) -> bool:
    jobs = httpx.get(url + "/v1/jobs", params={"status": "running"}, timeout=5).json()["data"]
    return bool(jobs) and jobs[0]["progress"]["step"] >= 1


def test_sigterm_answers_waiting_clients_and_exits_zero(tmp_path: Path) -> None:
    serve = ServeProcess(
        tmp_path / "data",
        engine="fake",
        fake_step_ms="200",
        workers="2",
        max_batch_images="1",
        api_drain_seconds="2",
        drain_seconds="1",
    )
    try:
        serve.wait_ready(timeout=60)
        quick: dict[str, Any] = {}
        slow: dict[str, Any] = {}
        clients = [
            threading.Thread(target=_generate, args=(serve.url, 150, slow)),  # 30 s
            threading.Thread(target=_generate, args=(serve.url, 8, quick)),  # 1.6 s
        ]
        clients[0].start()
        deadline = time.monotonic() + 30
        while not _running(serve.url):
            assert time.monotonic() < deadline and "status" not in slow, slow
            time.sleep(0.05)
        clients[1].start()
        time.sleep(0.3)  # the quick one is running on the other worker
        serve.proc.send_signal(signal.SIGTERM)
        for c in clients:
            c.join(timeout=60)
        code = serve.proc.wait(timeout=60)
    finally:
        serve.stop()
    log = serve.log_path.read_text()
    assert quick["status"] == 200, quick
    assert len(quick["body"]["images"]) == 1
    assert slow["status"] == 503, slow
    error = slow["body"]["error"]
    assert error["type"] == "shutting_down"
    assert error["poll_url"].startswith("/v1/jobs/")
    assert code == 0, log[-3000:]
    assert "Traceback" not in log, log[-3000:]
