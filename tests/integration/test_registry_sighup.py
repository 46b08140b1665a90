"""SIGHUP reloads the model registry of a running `sdserve api` process (a real
child process and a real signal; no restart). The API alone starts in seconds."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx

from sdserve.testing import ServeProcess


def _names(url: str) -> set[str]:
    return {m["id"] for m in httpx.get(url + "/v1/models", timeout=5).json()["data"]}


def test_sighup_reloads_a_running_api(
    tmp_path: Path, tiny_model_dir: Path, redis_url: str, redis_prefix: str
) -> None:
    registry = tmp_path / "registry.toml"
    registry.write_text(f'[models.first]\nsource = "{tiny_model_dir}"\n')
    api = ServeProcess(
        tmp_path / "api",
        command="api",
        model=str(tiny_model_dir),
        model_registry=str(registry),
        queue_backend="redis",
        redis_url=redis_url,
        redis_prefix=redis_prefix,
        secret_key="test-secret-key-" + "0" * 32,
        webhook_secret="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    )
    try:
        deadline = time.monotonic() + 60
        while True:  # no workers: /readyz stays 503, so wait for /v1/models
            try:
                names = _names(api.url)
                break
            except httpx.HTTPError:
                assert api.proc.poll() is None, api.log_path.read_text()[-2000:]
                assert time.monotonic() < deadline, "api never answered"
                time.sleep(0.1)
        assert "first" in names and "second" not in names
        registry.write_text(
            registry.read_text() + f'[models.second]\nsource = "{tiny_model_dir}"\n'
        )
        api.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while "second" not in _names(api.url):
            assert time.monotonic() < deadline, api.log_path.read_text()[-2000:]
            time.sleep(0.05)  # short poll: the reload runs as soon as the signal lands
        assert api.proc.poll() is None  # reloaded, not restarted or killed
    finally:
        api.stop()
