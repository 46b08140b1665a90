"""`sdserve serve` as a real process: kill -9 mid-batch, restart, nothing lost."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port

pytestmark = pytest.mark.slow


class ServeProcess:
    def __init__(self, data_dir: Path, model: Path, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}"
        env = dict(os.environ)
        env.update(
            {
                "SDSERVE_DATA_DIR": str(data_dir),
                "SDSERVE_MODEL": str(model),
                "SDSERVE_PORT": str(port),
                "SDSERVE_LEASE_SECONDS": "5",
                "SDSERVE_MAX_BATCH_IMAGES": "2",
                "SDSERVE_WEBHOOK_SECRET": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            }
        )
        self.log = (data_dir.parent / f"serve-{port}-{time.time_ns()}.log").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sdserve", "serve"], env=env, stdout=self.log, stderr=self.log
        )

    def wait_ready(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, "serve exited early"
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError("serve never became ready")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


@pytest.fixture
def serve_dirs(tmp_path: Path, tiny_model_dir: Path) -> Iterator[tuple[Path, Path]]:
    yield tmp_path / "data", tiny_model_dir


def test_kill_9_mid_batch_then_restart_completes_every_job(
    serve_dirs: tuple[Path, Path],
) -> None:
    data_dir, model = serve_dirs
    data_dir.mkdir()
    port = free_port()
    first = ServeProcess(data_dir, model, port)
    try:
        first.wait_ready()
        with httpx.Client(base_url=first.url, timeout=30) as c:
            ids = [
                c.post(
                    "/v1/jobs", json={"prompt": f"job {i}", "num_inference_steps": 150, "seed": i}
                ).json()["id"]
                for i in range(5)
            ]
            deadline = time.monotonic() + 60
            while c.get(f"/v1/jobs/{ids[0]}").json()["status"] != "running":
                assert time.monotonic() < deadline
                time.sleep(0.05)
            assert c.get("/healthz").status_code == 200  # answers while a batch runs
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(timeout=10)
    finally:
        first.stop()

    second = ServeProcess(data_dir, model, port)
    try:
        second.wait_ready()
        with httpx.Client(base_url=second.url, timeout=30) as c:
            deadline = time.monotonic() + 300
            for job_id in ids:
                while True:
                    job = c.get(f"/v1/jobs/{job_id}").json()
                    if job["status"] in ("succeeded", "failed", "canceled"):
                        break
                    assert time.monotonic() < deadline, job
                    time.sleep(0.2)
                assert job["status"] == "succeeded", job
            first_job = c.get(f"/v1/jobs/{ids[0]}").json()
            assert first_job["attempts"] >= 2  # it was running when the process died
    finally:
        second.stop()
