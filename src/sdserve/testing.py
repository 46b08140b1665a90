"""Helpers for tests and benchmarks: run `sdserve serve` as a real child process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from sdserve.domain.requests import JobSpec, OutputFormat, Priority


def job_spec(**overrides: Any) -> JobSpec:
    """A small valid JobSpec (64x64, 2 steps, model "tiny") with fields overridden."""
    values: dict[str, Any] = {
        "prompt": "p",
        "negative_prompt": "",
        "width": 64,
        "height": 64,
        "num_inference_steps": 2,
        "guidance_scale": 7.5,
        "seed": 1,
        "num_images": 1,
        "scheduler": "euler_a",
        "model": "tiny",
        "priority": Priority.normal,
        "output_format": OutputFormat.png,
    }
    values.update(overrides)
    return JobSpec(**values)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class ServeProcess:
    """`python -m sdserve serve` (or another subcommand) with SDSERVE_* overrides.
    Auth is off unless ``auth="on"`` is passed (it binds 127.0.0.1): benchmarks and
    process tests measure the queue, not keys."""

    def __init__(
        self, data_dir: Path, port: int | None = None, command: str = "serve", **env: str
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env.setdefault("auth", "off")
        # Workers' health/metrics port off unless asked for: tests run side by side.
        env.setdefault("worker_metrics_port", "0")
        full = dict(os.environ)
        full.update(
            {"SDSERVE_DATA_DIR": str(data_dir), "SDSERVE_PORT": str(self.port)}
            | {f"SDSERVE_{k.upper()}": v for k, v in env.items()}
        )
        data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = data_dir.parent / f"{command}-{self.port}-{time.time_ns()}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sdserve", command], env=full, stdout=self._log, stderr=self._log
        )

    def wait_ready(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"serve exited early; log: {self.log_path.read_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"serve never became ready; log: {self.log_path.read_text()[-3000:]}")

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._log.close()
