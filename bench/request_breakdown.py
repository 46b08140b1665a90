"""Where a synchronous request's time goes, from the job's own timestamps.

client->created: HTTP + validation + durable enqueue; created->started: queue wait +
wake-up + claim; run - engine: encode + store + complete; finished->client: wake-up +
read + base64 + response. Usage: python -m bench.request_breakdown [--model tiny|PATH]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from bench.common import model_path
from sdserve.testing import ServeProcess


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--size", type=int, default=64)
    args = ap.parse_args()
    model = args.model if args.model not in ("demo", "tiny") else model_path(args.model)
    proc = ServeProcess(
        Path(tempfile.mkdtemp()) / "data", model=model, max_batch_images="1", batch_window_ms="0"
    )
    rows: dict[str, list[float]] = {}
    try:
        proc.wait_ready()
        with httpx.Client(base_url=proc.url, timeout=120) as c:
            for i in range(args.n + 2):
                body = {
                    "prompt": "a red circle",
                    "seed": i,
                    "num_inference_steps": args.steps,
                    "width": args.size,
                    "height": args.size,
                }
                t0 = time.time()
                r = c.post("/v1/generate", json=body).json()
                t1 = time.time()
                j = c.get(f"/v1/jobs/{r['job_id']}").json()
                if i < 2:
                    continue
                parts = {
                    "total": t1 - t0,
                    "client->created": j["created_at"] - t0,
                    "created->started": j["started_at"] - j["created_at"],
                    "engine": r["generation_time"],
                    "encode+store+complete": j["finished_at"]
                    - j["started_at"]
                    - r["generation_time"],
                    "finished->client": t1 - j["finished_at"],
                }
                for k, v in parts.items():
                    rows.setdefault(k, []).append(v * 1000)
    finally:
        proc.stop()
    print(f"request breakdown (median of {args.n}, {args.size}x{args.size}, {args.steps} steps)")
    for k, v in rows.items():
        print(f"  {k:24s} {statistics.median(v):8.2f} ms")


if __name__ == "__main__":
    main()
