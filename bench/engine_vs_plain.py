"""The engine in-process against plain diffusers: where the service's time goes
before HTTP and the queue are involved.

Same model, prompt, scheduler, steps and thread count; rounds interleaved. Reports
wall time and process CPU time per image (CPU time is steadier on a shared machine).
Usage: python -m bench.engine_vs_plain [--threads 1] [--rounds 3] [--n 4]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from bench.common import model_path
from bench.vs_diffusers import PROMPT, plain_pipeline


def timed(fn: Any) -> tuple[float, float]:
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w0, time.process_time() - c0


def main() -> None:
    import torch

    from sdserve.config import Settings
    from sdserve.engine.base import BatchItem, BatchRequest
    from sdserve.engine.pipelines import DiffusersEngine
    from sdserve.wiring import build_catalog

    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--invariant", default="on")
    args = ap.parse_args()
    model = model_path("demo")
    pipe = plain_pipeline(model, args.threads)
    settings = Settings(torch_threads=args.threads, batch_invariant=args.invariant)
    engine = DiffusersEngine(settings, build_catalog(settings))
    engine.load()
    torch.set_num_threads(args.threads)
    name = engine.loaded_models()[0]

    def plain(seed: int) -> None:
        pipe(
            PROMPT,
            width=args.size,
            height=args.size,
            num_inference_steps=args.steps,
            guidance_scale=7.5,
            generator=torch.Generator().manual_seed(seed),
        )

    def eng(seed: int) -> None:
        req = BatchRequest(
            model=name,
            task="txt2img",
            width=args.size,
            height=args.size,
            num_inference_steps=args.steps,
            guidance_scale=7.5,
            scheduler="euler_a",
            items=[BatchItem(f"j{seed}", PROMPT, "", [seed])],
        )
        engine.generate(req, lambda step, total: set())

    plain(0)
    eng(0)
    p_w = p_c = e_w = e_c = 0.0
    for r in range(args.rounds):
        for i in range(args.n):
            w, c = timed(lambda s=100 * r + i: plain(s))
            p_w, p_c = p_w + w, p_c + c
            w, c = timed(lambda s=100 * r + i: eng(s))
            e_w, e_c = e_w + w, e_c + c
    total = args.rounds * args.n
    print(
        f"engine vs plain diffusers ({total} images each, {args.steps} steps, "
        f"{args.size}x{args.size}, {args.threads} threads, batch invariant {args.invariant})"
    )
    print(f"  plain:  wall {p_w / total * 1000:7.1f} ms/img  cpu {p_c / total * 1000:7.1f} ms/img")
    print(f"  engine: wall {e_w / total * 1000:7.1f} ms/img  cpu {e_c / total * 1000:7.1f} ms/img")
    print(f"  throughput ratio engine/plain: wall {p_w / e_w:.3f}x  cpu {p_c / e_c:.3f}x")


if __name__ == "__main__":
    main()
