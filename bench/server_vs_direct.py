"""Server vs direct pipeline call, sequential requests, same model and parameters.

direct = DiffusersEngine.generate + PNG encode in this process;
server = POST /v1/generate to a real `sdserve serve` (SQLite, one worker, no batching).
Prints the throughput ratio (server/direct) and the p50 latency the service adds.
Usage: python bench/server_vs_direct.py [--model demo|tiny|PATH] [--n 30] [--steps 20]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import httpx

from bench.common import model_path, pct, summary
from sdserve.config import Settings
from sdserve.domain.requests import OutputFormat
from sdserve.engine.base import BatchItem, BatchRequest
from sdserve.testing import ServeProcess
from sdserve.wiring import build_catalog
from sdserve.worker.encode import encode_image


def direct(model: str, n: int, steps: int, size: int) -> list[float]:
    from sdserve.engine.pipelines import DiffusersEngine

    settings = Settings(model=model, data_dir=Path(tempfile.mkdtemp()))
    engine = DiffusersEngine(settings, build_catalog(settings))
    engine.load()
    name = engine.models()[0].name
    times = []
    for i in range(n + 2):
        req = BatchRequest(
            name,
            "txt2img",
            size,
            size,
            steps,
            7.5,
            "euler_a",
            [BatchItem("j", "a red circle on a blue background", "", [i])],
        )
        t0 = time.perf_counter()
        out = engine.generate(req, lambda s, t: set())
        encode_image(out.items["j"].images[0], OutputFormat.png)
        if i >= 2:  # first calls warm caches
            times.append(time.perf_counter() - t0)
    return times


def server(model: str, n: int, steps: int, size: int) -> list[float]:
    data = Path(tempfile.mkdtemp(prefix="sdserve-bench-")) / "data"
    proc = ServeProcess(data, model=model, max_batch_images="1", batch_window_ms="0")
    times = []
    try:
        proc.wait_ready()
        with httpx.Client(base_url=proc.url, timeout=120) as c:
            for i in range(n + 2):
                body = {
                    "prompt": "a red circle on a blue background",
                    "seed": i,
                    "num_inference_steps": steps,
                    "width": size,
                    "height": size,
                }
                t0 = time.perf_counter()
                r = c.post("/v1/generate", json=body)
                r.raise_for_status()
                if i >= 2:
                    times.append(time.perf_counter() - t0)
    finally:
        proc.stop()
    return times


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="demo")
    ap.add_argument("--n", type=int, default=30)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--size", type=int, default=64)
    args = ap.parse_args()
    model = args.model if args.model not in ("demo", "tiny") else model_path(args.model)
    d = direct(model, args.n, args.steps, args.size)
    s = server(model, args.n, args.steps, args.size)
    print(
        f"server vs direct ({args.n} sequential requests, {args.steps} steps, "
        f"{args.size}x{args.size}, model {args.model})"
    )
    print("  " + summary("direct (engine + PNG encode)", d))
    print("  " + summary("server (HTTP /v1/generate)", s))
    print(f"  throughput ratio server/direct: {sum(d) / sum(s):.3f}x")
    print(f"  added p50 latency: {(pct(s, 0.5) - pct(d, 0.5)) * 1000:.2f} ms")


if __name__ == "__main__":
    main()
