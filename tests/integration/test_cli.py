"""The operator CLI against a real SQLite job store."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sdserve.domain.errors import GenerationFailed
from sdserve.domain.jobs import JobError, NewJob
from sdserve.queue.sqlite import SqliteQueue
from sdserve.testing import job_spec


def _run(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, SDSERVE_DATA_DIR=str(data_dir))
    return subprocess.run(
        [sys.executable, "-m", "sdserve", *args], env=env, capture_output=True, text=True
    )


def test_dead_letters_listed_and_requeued(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    q = SqliteQueue(data / "sdserve.db")
    spec = job_spec(num_inference_steps=1)
    job, _ = q.enqueue(NewJob(spec=spec, max_attempts=1))
    q.claim_batch("w", 1, 30)
    err = GenerationFailed("boom")
    q.fail(job.id, "w", JobError(type=err.type, message=err.message), retryable=True)
    q.close()

    listed = _run(data, "jobs", "dead-letters")
    assert listed.returncode == 0, listed.stderr
    assert job.id in listed.stdout and "generation_failed: boom" in listed.stdout
    assert "dead letters: 1" in _run(data, "jobs", "stats").stdout
    again = _run(data, "jobs", "requeue", job.id)
    assert again.returncode == 0 and "queued" in again.stdout
    assert _run(data, "jobs", "requeue", "job_nope").returncode == 1
    assert "queued: {'high': 0, 'normal': 1, 'low': 0}" in _run(data, "jobs", "stats").stdout
