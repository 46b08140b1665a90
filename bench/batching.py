"""Concurrency 8 against `sdserve serve` with max_batch_images 1, 4, 8: images/s.

Usage: python bench/batching.py [--model demo|tiny|PATH] [--requests 48] [--steps 20]
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from bench.common import model_path
from sdserve.testing import ServeProcess


def run(model: str, batch: int, requests: int, steps: int, size: int, clients: int) -> float:
    data = Path(tempfile.mkdtemp(prefix="sdserve-bench-")) / "data"
    proc = ServeProcess(data, model=model, max_batch_images=str(batch), batch_window_ms="20")
    try:
        proc.wait_ready()
        counter = iter(range(requests))
        lock = threading.Lock()

        def client() -> None:
            with httpx.Client(base_url=proc.url, timeout=600) as c:
                while True:
                    with lock:
                        i = next(counter, None)
                    if i is None:
                        return
                    body = {
                        "prompt": f"a red circle {i % 5}",
                        "seed": i,
                        "num_inference_steps": steps,
                        "width": size,
                        "height": size,
                    }
                    c.post("/v1/generate", json=body).raise_for_status()

        with httpx.Client(base_url=proc.url, timeout=600) as c:  # warm-up
            c.post(
                "/v1/generate",
                json={
                    "prompt": "warm",
                    "num_inference_steps": steps,
                    "width": size,
                    "height": size,
                },
            ).raise_for_status()
        threads = [threading.Thread(target=client) for _ in range(clients)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        ips = requests / (time.perf_counter() - t0)
        with httpx.Client(base_url=proc.url, timeout=60) as c:
            jobs = c.get("/v1/jobs", params={"limit": 200}).json()["data"]
        _explain([j for j in jobs if j["parameters"]["prompt"] != "warm"])
        return ips
    finally:
        proc.stop()


def _explain(jobs: list[dict[str, Any]]) -> None:
    """Jobs of one batch share started_at: mean batch size and where the time went."""
    batches: dict[float, list[dict[str, Any]]] = {}
    for j in jobs:
        batches.setdefault(j["started_at"], []).append(j)
    engine = sum(b[0]["result"]["generation_time"] for b in batches.values())
    busy = sum(max(j["finished_at"] for j in b) - b[0]["started_at"] for b in batches.values())
    print(
        f"    {len(batches)} batches, mean {len(jobs) / len(batches):.2f} images; "
        f"engine {engine:.2f}s of {busy:.2f}s busy (rest: encode, store, complete)"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="demo")
    ap.add_argument("--requests", type=int, default=48)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--batches", default="1,4,8")
    args = ap.parse_args()
    model = args.model if args.model not in ("demo", "tiny") else model_path(args.model)
    print(
        f"batching: {args.clients} concurrent clients, {args.requests} requests, "
        f"{args.steps} steps, {args.size}x{args.size}, model {args.model}"
    )
    base = None
    for b in (int(x) for x in args.batches.split(",")):
        ips = run(model, b, args.requests, args.steps, args.size, args.clients)
        base = base or ips
        print(f"  max_batch_images={b}: {ips:6.2f} images/s ({ips / base:.2f}x of batch 1)")


if __name__ == "__main__":
    main()
