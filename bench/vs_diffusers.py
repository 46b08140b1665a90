"""The service against plain diffusers in-process: same model, parameters and threads.

plain   = ``StableDiffusionPipeline.from_pretrained(...)(prompt, ...)`` in this process,
          the ten lines a user would write (PIL image out, no encoding).
service = ``POST /v1/generate`` to a real ``sdserve serve`` (SQLite queue, one worker,
          exact batching on), PNG bytes back over HTTP.

Rounds are interleaved (plain, service, plain, ...) in one run so drift on a shared
machine hits both. Then 8 concurrent clients against the service (exact and, for
reference, non-exact batching) reported against the same sequential plain baseline.
``--task img2img`` (the demo model, strength 0.6) and ``--task inpaint`` (the shipped
9-channel demo-inpaint companion, right half masked) compare the editing pipelines the
same way: diffusers' Img2Img / Inpaint pipeline in-process against ``POST /v1/generate``
with the same input image (base64) and mask.
Usage: python -m bench.vs_diffusers [--task txt2img|img2img|inpaint] [--rounds 3] [--n 8]
"""

from __future__ import annotations

import argparse
import base64
import io
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from bench.common import model_path, pct
from sdserve.testing import ServeProcess

PROMPT = "a red circle on a blue background"
STRENGTH = 0.6
TASK = "txt2img"  # set by main(): every request below is of this task


def edit_inputs(size: int) -> tuple[Any, Any]:
    """A fixed input picture and a right-half mask, as PIL images."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (size, size), (30, 60, 200))
    ImageDraw.Draw(image).ellipse((size // 8, size // 4, size // 2, size * 3 // 4), (220, 30, 30))
    mask = Image.new("L", (size, size), 0)
    ImageDraw.Draw(mask).rectangle((size // 2, 0, size, size), 255)
    return image, mask


def _b64(image: Any) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def plain_pipeline(model: str, threads: int) -> Any:
    import torch
    from diffusers import (
        EulerAncestralDiscreteScheduler,
        StableDiffusionImg2ImgPipeline,
        StableDiffusionInpaintPipeline,
        StableDiffusionPipeline,
    )

    torch.set_num_threads(threads)
    cls = {
        "txt2img": StableDiffusionPipeline,
        "img2img": StableDiffusionImg2ImgPipeline,
        "inpaint": StableDiffusionInpaintPipeline,
    }[TASK]
    pipe = cls.from_pretrained(model, use_safetensors=True, torch_dtype=torch.float32)
    pipe.scheduler = EulerAncestralDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def plain_round(pipe: Any, n: int, steps: int, size: int, seed0: int) -> list[float]:
    import torch

    image, mask = edit_inputs(size)
    extra: dict[str, Any] = {}
    if TASK == "img2img":
        extra = {"image": image, "strength": STRENGTH}
    elif TASK == "inpaint":
        extra = {"image": image, "mask_image": mask, "width": size, "height": size}
    else:
        extra = {"width": size, "height": size}
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        pipe(
            PROMPT,
            **extra,
            num_inference_steps=steps,
            guidance_scale=7.5,
            generator=torch.Generator().manual_seed(seed0 + i),
        ).images[0]
        times.append(time.perf_counter() - t0)
    return times


def body(seed: int, steps: int, size: int) -> dict[str, Any]:
    image, mask = edit_inputs(size)
    edit: dict[str, Any] = {}
    if TASK == "img2img":
        edit = {"task": "img2img", "image": _b64(image), "strength": STRENGTH}
    elif TASK == "inpaint":
        # keep_unmasked off: plain diffusers does not paste the original back either.
        edit = {
            "task": "inpaint",
            "model": "demo-inpaint",
            "image": _b64(image),
            "mask": _b64(mask),
            "mask_blur": 0,
            "keep_unmasked": False,
        }
    return edit | {
        "prompt": PROMPT,
        "seed": seed,
        "num_inference_steps": steps,
        "width": size,
        "height": size,
        "scheduler": "euler_a",
        "guidance_scale": 7.5,
    }


def service_round(url: str, n: int, steps: int, size: int, seed0: int) -> list[float]:
    times = []
    with httpx.Client(base_url=url, timeout=300) as c:
        for i in range(n):
            t0 = time.perf_counter()
            c.post("/v1/generate", json=body(seed0 + i, steps, size)).raise_for_status()
            times.append(time.perf_counter() - t0)
    return times


def concurrent(url: str, clients: int, per_client: int, steps: int, size: int) -> float:
    """Images per second with ``clients`` closed-loop clients."""

    def one(c: int) -> None:
        with httpx.Client(base_url=url, timeout=600) as http:
            for i in range(per_client):
                seed = 10_000 + c * per_client + i
                http.post("/v1/generate", json=body(seed, steps, size)).raise_for_status()

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, range(clients)))
    return clients * per_client / (time.perf_counter() - t0)


def start(model: str, threads: int, batch: int, invariant: str) -> ServeProcess:
    data = Path(tempfile.mkdtemp(prefix="sdserve-bench-")) / "data"
    proc = ServeProcess(
        data,
        model=model,
        max_batch_images=str(batch),
        batch_window_ms="0" if batch == 1 else "20",
        torch_threads=str(threads),
        batch_invariant=invariant,
    )
    proc.wait_ready()
    return proc


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="demo")
    ap.add_argument("--task", default="txt2img", choices=["txt2img", "img2img", "inpaint"])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--clients", type=int, default=8)
    args = ap.parse_args()
    global TASK
    TASK = args.task
    model = args.model if args.model not in ("demo", "tiny") else model_path(args.model)
    plain_model = model
    if TASK == "inpaint":
        from sdserve.wiring import PACKAGED_COMPANIONS

        plain_model = str(PACKAGED_COMPANIONS["demo-inpaint"])
    pipe = plain_pipeline(plain_model, args.threads)
    plain_round(pipe, 2, args.steps, args.size, 0)  # warm-up
    plain: list[float] = []
    service: list[float] = []
    proc = start(model, args.threads, 1, "on")
    try:
        service_round(proc.url, 2, args.steps, args.size, 0)  # warm-up
        for r in range(args.rounds):
            plain += plain_round(pipe, args.n, args.steps, args.size, 100 * r)
            service += service_round(proc.url, args.n, args.steps, args.size, 100 * r)
    finally:
        proc.stop()
    base = len(plain) / sum(plain)
    print(
        f"{TASK}: service vs plain diffusers ({args.rounds} interleaved rounds x {args.n} "
        f"sequential "
        f"requests, {args.steps} steps, {args.size}x{args.size}, {args.threads} threads, "
        f"model {args.model})"
    )
    print(f"  plain diffusers: {base:6.2f} img/s  p50 {pct(plain, 0.5) * 1000:7.1f} ms")
    svc = len(service) / sum(service)
    print(f"  service batch 1: {svc:6.2f} img/s  p50 {pct(service, 0.5) * 1000:7.1f} ms")
    print(f"  throughput ratio service/plain at batch 1: {svc / base:.3f}x")
    per_client = max(2, args.n // 2)
    for invariant, label in (("on", "exact"), ("off", "non-exact")):
        proc = start(model, args.threads, args.clients, invariant)
        try:
            service_round(proc.url, 1, args.steps, args.size, 0)
            rate = concurrent(proc.url, args.clients, per_client, args.steps, args.size)
        finally:
            proc.stop()
        print(
            f"  {args.clients} clients, {label} batching: {rate:6.2f} img/s = "
            f"{rate / base:.2f}x plain sequential"
        )


if __name__ == "__main__":
    main()
