"""`sdserve serve` as a real process: kill -9 mid-batch, restart, nothing lost."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from sdserve.testing import ServeProcess, free_port

pytestmark = pytest.mark.slow

ENV = {
    "lease_seconds": "5",
    "max_batch_images": "2",
    "webhook_secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
}


def _wait_terminal(c: httpx.Client, job_id: str, deadline: float) -> dict[str, object]:
    while True:
        job: dict[str, object] = c.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "canceled"):
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.2)


def test_kill_9_mid_batch_then_restart_completes_every_job(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    data_dir, port = tmp_path / "data", free_port()
    # A long batch window: the first claim waits for a companion, so the killed batch
    # holds two jobs however loaded the machine is (see the attempts check below).
    first = ServeProcess(data_dir, port, model=str(tiny_model_dir), batch_window_ms="3000", **ENV)
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
        killed_at = time.time()
        first.kill()
    finally:
        first.stop()

    second = ServeProcess(data_dir, port, model=str(tiny_model_dir), **ENV)
    try:
        second.wait_ready()
        with httpx.Client(base_url=second.url, timeout=30) as c:
            deadline = time.monotonic() + 300
            jobs = [_wait_terminal(c, job_id, deadline) for job_id in ids]
        assert [j["status"] for j in jobs] == ["succeeded"] * 5, jobs
        # It started before the kill and finished after it. It died in a batch of two,
        # so that attempt was refunded (not its fault): one counted attempt, run alone.
        first_job = jobs[0]
        assert isinstance(first_job["started_at"], float) and first_job["started_at"] < killed_at
        assert isinstance(first_job["finished_at"], float) and first_job["finished_at"] > killed_at
        assert first_job["attempts"] == 1
    finally:
        second.stop()


def test_api_and_worker_as_separate_processes_and_graceful_sigterm(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    import signal

    data_dir, port = tmp_path / "data", free_port()
    env = {**ENV, "model": str(tiny_model_dir)}
    api = ServeProcess(data_dir, port, command="api", **env)
    worker = ServeProcess(data_dir, port, command="worker", **env)
    try:
        api.wait_ready()  # ready once the separate worker published its state
        with httpx.Client(base_url=api.url, timeout=30) as c:
            job_id = c.post(
                "/v1/jobs", json={"prompt": "x", "num_inference_steps": 60, "seed": 1}
            ).json()["id"]
            deadline = time.monotonic() + 60
            while c.get(f"/v1/jobs/{job_id}").json()["status"] != "running":
                assert time.monotonic() < deadline
                time.sleep(0.05)
            worker.proc.send_signal(signal.SIGTERM)  # pre-emption notice: finish the batch
            assert worker.proc.wait(timeout=60) == 0
            job = c.get(f"/v1/jobs/{job_id}").json()
            assert job["status"] == "succeeded" and job["attempts"] == 1
    finally:
        worker.stop()
        api.stop()


def test_kill_9_of_the_worker_mid_workflow_resumes_at_its_step(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    data_dir, port = tmp_path / "data", free_port()
    env = {**ENV, "model": str(tiny_model_dir)}
    api = ServeProcess(data_dir, port, command="api", **env)
    worker = ServeProcess(data_dir, port, command="worker", **env)
    replacement: ServeProcess | None = None
    steps = [
        {"prompt": "an empty room", "seed": 3, "num_inference_steps": 3},
        {"task": "img2img", "prompt": "a room", "strength": 1.0, "num_inference_steps": 150},
        {"task": "img2img", "prompt": "a lit room", "num_inference_steps": 4},
    ]
    try:
        api.wait_ready()
        with httpx.Client(base_url=api.url, timeout=30) as c:
            wf_id = c.post("/v1/workflows", json={"steps": steps}).json()["id"]
            deadline = time.monotonic() + 120
            while True:
                view = c.get(f"/v1/workflows/{wf_id}").json()
                if view["steps"][1]["status"] == "running":
                    break
                assert time.monotonic() < deadline, view
                time.sleep(0.05)
            killed_at = time.time()
            worker.kill()
            replacement = ServeProcess(data_dir, port, command="worker", **env)
            deadline = time.monotonic() + 300
            while view["status"] == "running":
                assert time.monotonic() < deadline, view
                time.sleep(0.2)
                view = c.get(f"/v1/workflows/{wf_id}").json()
            jobs = [c.get(f"/v1/jobs/{s['job_id']}").json() for s in view["steps"]]
        assert view["status"] == "succeeded", view
        first, second, third = jobs
        assert first["attempts"] == 1 and first["finished_at"] < killed_at  # not redone
        assert second["started_at"] < killed_at < second["finished_at"]
        assert second["attempts"] == 2  # it died alone: that attempt counts
        assert third["started_at"] > killed_at
    finally:
        for proc in (replacement, worker, api):
            if proc is not None:
                proc.stop()
