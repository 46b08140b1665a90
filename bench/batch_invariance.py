"""Batched vs single images on one engine: largest pixel difference and images/s,
with true batching and with the row-wise (batch-invariant) UNet.

Usage: python -m bench.batch_invariance [--model PATH|tiny] [--size 512] [--batch 4]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import model_path
from sdserve.config import Settings
from sdserve.engine.base import BatchItem, BatchRequest
from sdserve.wiring import build_catalog


def run(model: str, size: int, batch: int, steps: int, invariant: bool) -> tuple[int, float]:
    from sdserve.engine.pipelines import DiffusersEngine

    settings = Settings(model=model, data_dir=Path(tempfile.mkdtemp()))
    engine = DiffusersEngine(settings, build_catalog(settings), batch_invariant=invariant)
    engine.load()
    name = engine.models()[0].name
    seeds = list(range(100, 100 + batch))
    prompts = ["a red circle on a blue background", "a green square"]

    def gen(items: list[BatchItem]) -> list[np.ndarray]:
        req = BatchRequest(name, "txt2img", size, size, steps, 7.5, "euler_a", items)
        out = engine.generate(req, lambda s, t: set())
        return [
            np.asarray(im, dtype=np.int16) for it in items for im in out.items[it.job_id].images
        ]

    items = [BatchItem(f"j{i}", prompts[i % 2], "", [s]) for i, s in enumerate(seeds)]
    gen(items)  # warm-up
    t0 = time.perf_counter()
    together = gen(items)
    batched_ips = batch / (time.perf_counter() - t0)
    alone = [gen([it])[0] for it in items]
    diff = max(int(np.abs(a - b).max()) for a, b in zip(together, alone, strict=True))
    return diff, batched_ips


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args()
    model = args.model if args.model not in ("demo", "tiny") else model_path(args.model)
    print(f"batch invariance ({args.batch} images, {args.size}x{args.size}, {args.steps} steps)")
    for invariant in (False, True):
        diff, ips = run(model, args.size, args.batch, args.steps, invariant)
        mode = "row-wise UNet (invariant)" if invariant else "true batching"
        print(f"  {mode:26s}: max pixel diff batched vs single = {diff:3d}; {ips:6.2f} images/s")


if __name__ == "__main__":
    main()
