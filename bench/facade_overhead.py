"""What a compatibility facade costs per request: the same 64x64, 1-step txt2img
through the native /v1/generate, OpenAI's /v1/images/generations (b64_json) and
A1111's /sdapi/v1/txt2img, on one live server (uvicorn + the torch-free FakeEngine
worker, SQLite queue). Requests alternate between the three, so machine load weighs
on all alike. Prints latency per route (median, p95) and each facade's median over
the native one.
Usage: python -m bench.facade_overhead [--n 200]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from sdserve.config import Settings
from sdserve.engine.fake import FakeEngine
from sdserve.testing import free_port
from tests.integration.live import start_live

ROUTES: dict[str, tuple[str, dict[str, Any]]] = {
    "native": (
        "/v1/generate",
        {"prompt": "a red circle", "num_inference_steps": 1, "width": 64, "height": 64},
    ),
    "openai": (
        "/v1/images/generations",
        {"prompt": "a red circle", "size": "64x64", "response_format": "b64_json", "steps": 1},
    ),
    "a1111": (
        "/sdapi/v1/txt2img",
        {"prompt": "a red circle", "steps": 1, "width": 64, "height": 64},
    ),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200)
    args = ap.parse_args()
    settings = Settings(
        data_dir=Path(tempfile.mkdtemp()) / "data",
        queue_backend="sqlite",
        port=free_port(),
        batch_window_ms=0,
        auth="off",
        webhook_secret="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        secret_key="bench-secret-key-" + "0" * 32,
    )
    svc = start_live(settings)
    svc.start_workers(FakeEngine())
    results: dict[str, list[float]] = {name: [] for name in ROUTES}
    try:
        with svc.client() as c:
            for i in range(args.n + 20):  # the first 20 rounds warm up
                names = list(ROUTES)
                names = names[i % 3 :] + names[: i % 3]  # each goes first in turn
                for name in names:
                    path, body = ROUTES[name]
                    t0 = time.perf_counter()
                    r = c.post(path, json=body)
                    elapsed = time.perf_counter() - t0
                    assert r.status_code == 200, r.text
                    if i >= 20:
                        results[name].append(elapsed * 1000)
    finally:
        svc.stop()
    native = statistics.median(results["native"])
    for name, times in results.items():
        times.sort()
        med, p95 = statistics.median(times), times[int(len(times) * 0.95) - 1]
        print(f"{name:7s} median {med:7.2f} ms  p95 {p95:7.2f} ms  x{med / native:.2f} native")


if __name__ == "__main__":
    main()
