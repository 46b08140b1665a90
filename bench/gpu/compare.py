"""Issue 12's GPU figures in one run: the engine against plain and compiled diffusers.

On the same card, same SD1.5-shaped model (``bench.fullsize_model``), fp16, 20 steps,
guidance 7.5, euler_a, per batch size (1, 4, 8):

- plain diffusers: ``StableDiffusionPipeline`` as a user writes it;
- compiled diffusers: the same with channels-last, fused QKV and ``torch.compile`` of
  the UNet and VAE decoder (diffusers' own speed-up recipe);
- the engine: ``DiffusersEngine`` with the service's settings (exact batching off, the
  CUDA default; and the compiled configuration).

Each prints s/image and the share of the card's dense fp16 peak (FLOPs counted once by
``torch.utils.flop_counter`` over one UNet step and one VAE decode). Then an
SDXL-shaped UNet at 1024² (batch 1 with guidance: s/step, eager and compiled).
Usage: python -m bench.gpu.compare --model /tmp/sd15 [--batches 1,4,8] [--no-compile]
On a CPU, ``--device cpu --size 64 --steps 2 --model <tiny>`` checks the script runs.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

PROMPT = "a photograph of an astronaut riding a horse"
# Dense (no sparsity) fp16/bf16 tensor-core peaks, TFLOP/s.
PEAKS = {"H100": 989.4, "H200": 989.4, "A100": 312.0, "L40S": 362.1, "A10": 125.0}


def peak_tflops(device: Any) -> float | None:
    import torch

    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAKS.items() if k in name), None)


def sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: Any, repeat: int) -> float:
    """Best of ``repeat`` wall times (after the caller's warm-up)."""
    best = float("inf")
    for _ in range(repeat):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


def image_flops(pipe: Any, size: int, steps: int) -> float:
    """FLOPs of one image: ``steps`` UNet calls on its guidance pair + one VAE decode."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    unet, vae = pipe.unet, pipe.vae
    dev, dt = unet.device, unet.dtype
    lat = size // 8
    sample = torch.randn(2, unet.config.in_channels, lat, lat, device=dev, dtype=dt)
    ctx = torch.randn(2, 77, unet.config.cross_attention_dim, device=dev, dtype=dt)
    with torch.inference_mode(), FlopCounterMode(display=False) as unet_count:
        unet(sample, torch.tensor(500, device=dev), encoder_hidden_states=ctx)
    z = torch.randn(1, vae.config.latent_channels, lat, lat, device=dev, dtype=dt)
    with torch.inference_mode(), FlopCounterMode(display=False) as vae_count:
        vae.decode(z)
    return float(steps * unet_count.get_total_flops() + vae_count.get_total_flops())


def plain_pipe(model: str, device: Any, dtype: Any) -> Any:
    from diffusers import EulerAncestralDiscreteScheduler, StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(
        model, torch_dtype=dtype, use_safetensors=True, safety_checker=None
    ).to(device)
    pipe.scheduler = EulerAncestralDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def compile_pipe(pipe: Any, mode: str) -> Any:
    import torch

    pipe.fuse_qkv_projections()
    pipe.unet.to(memory_format=torch.channels_last)
    pipe.vae.to(memory_format=torch.channels_last)
    pipe.unet = torch.compile(pipe.unet, mode=mode, fullgraph=True)
    pipe.vae.decode = torch.compile(pipe.vae.decode, mode=mode, fullgraph=True)
    return pipe


def run_plain(pipe: Any, batch: int, size: int, steps: int, device: Any) -> None:
    import torch

    gens = [torch.Generator(device).manual_seed(i) for i in range(batch)]
    pipe(
        [PROMPT] * batch,
        width=size,
        height=size,
        num_inference_steps=steps,
        guidance_scale=7.5,
        generator=gens,
    )


def engine_for(model: str, device: str, compiled: bool, mode: str) -> tuple[Any, str]:
    from sdserve.config import Settings
    from sdserve.engine.pipelines import DiffusersEngine
    from sdserve.wiring import build_catalog

    settings = Settings(
        model=model,
        device=device,  # type: ignore[arg-type]
        dtype="float16" if device == "cuda" else "float32",
        batch_invariant="off" if device == "cuda" else "on",
        torch_compile=compiled,
        torch_compile_mode=mode,  # type: ignore[arg-type]
        compile_vae=compiled,
        channels_last=compiled,
        fuse_qkv=compiled,
    )
    engine = DiffusersEngine(settings, build_catalog(settings))
    engine.load()
    return engine, engine.loaded_models()[0]


def run_engine(engine: Any, name: str, batch: int, size: int, steps: int) -> None:
    from sdserve.engine.base import BatchItem, BatchRequest

    items = [BatchItem(f"j{i}", PROMPT, "", [i]) for i in range(batch)]
    req = BatchRequest(name, "txt2img", size, size, steps, 7.5, "euler_a", items)
    engine.generate(req, lambda step, total: set())


def sdxl_step(device: Any, dtype: Any, size: int, compiled: bool, mode: str) -> float:
    """Seconds per denoising step of an SDXL-shaped UNet (random weights), batch 1 with
    guidance (2 rows), at ``size``² pixels."""
    import torch
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=size // 8,
        block_out_channels=(320, 640, 1280),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 2, 10),
        attention_head_dim=(5, 10, 20),
        cross_attention_dim=2048,
        addition_embed_type="text_time",
        addition_time_embed_dim=256,
        projection_class_embeddings_input_dim=2816,
        use_linear_projection=True,
        layers_per_block=2,
    ).to(device, dtype)
    if compiled:
        unet.to(memory_format=torch.channels_last)
        unet.fuse_qkv_projections()
        unet = torch.compile(unet, mode=mode, fullgraph=True)
    lat = size // 8
    x = torch.randn(2, 4, lat, lat, device=device, dtype=dtype)
    ctx = torch.randn(2, 77, 2048, device=device, dtype=dtype)
    cond = {
        "text_embeds": torch.randn(2, 1280, device=device, dtype=dtype),
        "time_ids": torch.tensor([[size, size, 0, 0, size, size]] * 2, device=device, dtype=dtype),
    }
    t = torch.tensor(500, device=device)

    def step() -> None:
        with torch.inference_mode():
            unet(x, t, encoder_hidden_states=ctx, added_cond_kwargs=cond)

    for _ in range(3):
        step()
    return timed(step, torch.device(device), 5)


def main() -> None:
    import torch

    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batches", default="1,4,8")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--compile-mode", default="max-autotune")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--sdxl-size", type=int, default=1024)
    ap.add_argument("--no-sdxl", action="store_true")
    args = ap.parse_args()
    device = torch.device(args.device)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    batches = [int(b) for b in args.batches.split(",")]
    peak = peak_tflops(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device {name}; dense fp16 peak {peak} TFLOP/s; {args.size}², {args.steps} steps")

    pipe = plain_pipe(args.model, device, dtype)
    flops = image_flops(pipe, args.size, args.steps)
    print(f"FLOPs per image: {flops / 1e12:.2f} TFLOP")

    def report(label: str, batch: int, seconds: float) -> None:
        per_image = seconds / batch
        share = f"{flops / per_image / (peak * 1e12) * 100:5.1f}% of peak" if peak else ""
        print(f"  {label:<22} batch {batch}: {per_image:7.3f} s/image  {share}", flush=True)

    variants: list[tuple[str, Callable[[int], None]]] = []
    variants.append(
        ("plain diffusers", lambda b: run_plain(pipe, b, args.size, args.steps, device))
    )
    engine, ename = engine_for(args.model, args.device, False, args.compile_mode)
    variants.append(("engine", lambda b: run_engine(engine, ename, b, args.size, args.steps)))
    for label, fn in variants:
        for b in batches:
            fn(b)  # warm-up at this shape
            report(label, b, timed(lambda fn=fn, b=b: fn(b), device, args.repeat))
    if not args.no_compile:
        cpipe = compile_pipe(pipe, args.compile_mode)
        cengine, cname = engine_for(args.model, args.device, True, args.compile_mode)
        compiled = [
            ("compiled diffusers", lambda b: run_plain(cpipe, b, args.size, args.steps, device)),
            ("engine, compiled", lambda b: run_engine(cengine, cname, b, args.size, args.steps)),
        ]
        for label, fn in compiled:
            for b in batches:
                t0 = time.perf_counter()
                fn(b)  # compiles at this shape
                print(f"  ({label} batch {b}: first call {time.perf_counter() - t0:.1f} s)")
                report(label, b, timed(lambda fn=fn, b=b: fn(b), device, args.repeat))
    if not args.no_sdxl:
        for compiled_unet in (False, True) if not args.no_compile else (False,):
            s = sdxl_step(args.device, dtype, args.sdxl_size, compiled_unet, args.compile_mode)
            label = "compiled" if compiled_unet else "eager"
            print(
                f"SDXL-shaped UNet {args.sdxl_size}², batch 1 + guidance, {label}: {s:.4f} s/step"
            )


if __name__ == "__main__":
    main()
