"""Editing tasks (img2img, inpaint, upscale) on the tiny models: real diffusers code on
CPU, loaded through the same catalog and loader as real checkpoints."""

from __future__ import annotations

import functools
import gc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest
import torch
from PIL import Image

from sdserve.config import Settings
from sdserve.domain.errors import GenerationFailed, InvalidRequest, OutOfMemory
from sdserve.domain.limits import SCHEDULER_NAMES
from sdserve.domain.requests import steps_run
from sdserve.engine.base import BatchItem, BatchOutput, BatchRequest
from sdserve.engine.catalog import Catalog, describe
from sdserve.engine.editing import blur_mask
from sdserve.engine.pipelines import DiffusersEngine
from sdserve.engine.tasks import task_pipeline

STEPS = 4
SIZE = 32  # img2img / inpaint output side


def _none(step: int, total: int) -> set[str]:
    return set()


def _recorder() -> tuple[list[tuple[int, int]], Callable[[int, int], set[str]]]:
    seen: list[tuple[int, int]] = []

    def on_step(step: int, total: int) -> set[str]:
        seen.append((step, total))
        return set()

    return seen, on_step


def _noise(seed: int, w: int, h: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def _mask(w: int, h: int) -> Image.Image:
    mask = Image.new("L", (w, h), 0)
    mask.paste(255, (w // 4, h // 4, 3 * w // 4, 3 * h // 4))
    return mask


@pytest.fixture(scope="module")
def engine(demo_model_dir: Path, edit_models_dir: Path) -> DiffusersEngine:
    catalog = Catalog(
        describe("demo", str(demo_model_dir)),
        [describe(n, str(edit_models_dir / n)) for n in ("inpaint", "x4", "x2")],
    )
    # 16-pixel tiles: the x4 model tiles from 17 input pixels on, the x2 one (whose
    # smallest tile is 32) from 33.
    eng = DiffusersEngine(Settings(device="cpu", upscale_tile_size=16), catalog, max_loaded=4)
    eng.load()
    return eng


def _req(model: str, task: str, items: list[BatchItem], **kw: Any) -> BatchRequest:
    w = kw.pop("width", SIZE)
    h = kw.pop("height", SIZE)
    scheduler = kw.pop("scheduler", "euler" if model == "x2" else "euler_a")
    steps = kw.pop("steps", STEPS)
    return BatchRequest(model, task, w, h, steps, kw.pop("guidance", 7.5), scheduler, items, **kw)


def _arr(out: BatchOutput, job: str, k: int = 0) -> np.ndarray:
    return np.asarray(out.items[job].images[k])


# --- what each model is ---


def test_families_tasks_and_sizes_come_from_the_configs(
    demo_model_dir: Path, edit_models_dir: Path
) -> None:
    demo = describe("demo", str(demo_model_dir))
    inpaint, x4, x2 = (describe(n, str(edit_models_dir / n)) for n in ("inpaint", "x4", "x2"))
    assert (demo.family, demo.tasks) == ("sd1", ("txt2img", "img2img", "inpaint"))
    assert (inpaint.family, inpaint.tasks, inpaint.default_width) == ("inpaint", ("inpaint",), 64)
    assert (x4.family, x4.tasks, x4.upscale_factor, x4.default_width) == (
        "upscaler",
        ("upscale",),
        4,
        64,
    )
    assert x4.default_scheduler == "ddim" and x4.schedulers == SCHEDULER_NAMES
    assert (x2.family, x2.upscale_factor, x2.default_scheduler, x2.schedulers) == (
        "latent-upscaler",
        2,
        "euler",
        ("euler",),
    )


def _checkpoint(path: Path, tensors: dict[str, tuple[int, ...]]) -> Path:
    from safetensors.numpy import save_file

    save_file({k: np.zeros(s, dtype=np.float16) for k, s in tensors.items()}, str(path))
    return path


def test_family_from_unet_channels_and_single_file_shapes(tmp_path: Path) -> None:
    import json

    folder = tmp_path / "community-inpaint"
    for sub, cfg in {
        ".": {"_class_name": "StableDiffusionPipeline"},  # class says txt2img
        "unet": {"in_channels": 9, "sample_size": 64},  # the UNet says inpainting
        "vae": {"block_out_channels": [128, 256, 512, 512]},
    }.items():
        (folder / sub).mkdir(parents=True, exist_ok=True)
        name = "model_index.json" if sub == "." else "config.json"
        (folder / sub / name).write_text(json.dumps(cfg))
    info = describe("ci", str(folder))
    assert (info.family, info.default_width, info.tasks) == ("inpaint", 512, ("inpaint",))

    conv = "model.diffusion_model.input_blocks.0.0.weight"
    sd_inpaint = _checkpoint(tmp_path / "a.safetensors", {conv: (320, 9, 3, 3)})
    xl_inpaint = _checkpoint(
        tmp_path / "b.safetensors",
        {conv: (320, 9, 3, 3), "conditioner.embedders.1.model.ln_final.weight": (4,)},
    )
    x4 = _checkpoint(tmp_path / "c.safetensors", {conv: (256, 7, 3, 3)})
    plain = _checkpoint(tmp_path / "d.safetensors", {conv: (320, 4, 3, 3)})
    got = {p.stem: describe(p.stem, str(p)) for p in (sd_inpaint, xl_inpaint, x4, plain)}
    assert {k: (v.family, v.default_width) for k, v in got.items()} == {
        "a": ("inpaint", 512),
        "b": ("inpaint", 1024),
        "c": ("upscaler", 512),
        "d": ("sd1", 512),
    }


# --- refusing what a model cannot do ---


@pytest.mark.parametrize(
    ("model", "task", "kw", "field"),
    [
        ("demo", "upscale", {}, "task"),
        ("inpaint", "txt2img", {}, "task"),
        ("inpaint", "img2img", {}, "task"),
        ("x4", "img2img", {}, "task"),
        ("x2", "upscale", {"scheduler": "ddim"}, "scheduler"),
        ("demo", "img2img", {"image": None}, "image"),
        ("inpaint", "inpaint", {"mask": None}, "mask"),
        ("demo", "img2img", {"strength": 0.2}, "strength"),  # 4 x 0.2 = 0 steps
        ("demo", "img2img", {"strength": 1.5}, "strength"),
        ("demo", "img2img", {"scheduler": "lcm", "steps": 60}, "num_inference_steps"),
        ("x4", "upscale", {"noise_level": 351}, "noise_level"),
        ("x4", "upscale", {"width": 66}, "width"),
    ],
)
def test_refused_requests_name_the_field(
    engine: DiffusersEngine, model: str, task: str, kw: dict[str, Any], field: str
) -> None:
    image = kw.pop("image", _noise(0, 16, 16))
    mask = kw.pop("mask", _mask(16, 16))
    items = [BatchItem("j", "x", "", [1], image, mask)]
    with pytest.raises(InvalidRequest) as err:
        engine.generate(_req(model, task, items, width=kw.pop("width", 64), **kw), _none)
    assert [p.field for p in err.value.problems] == [field]


# --- each task is diffusers' own pipeline ---


def test_img2img_is_diffusers_img2img_with_strength(engine: DiffusersEngine) -> None:
    image = _noise(1, SIZE, SIZE)
    outs = {}
    for strength in (0.5, 1.0):
        seen, on_step = _recorder()
        req = _req("demo", "img2img", [BatchItem("j", "a cat", "", [7], image)], strength=strength)
        out = engine.generate(req, on_step)
        total = steps_run(STEPS, strength)
        assert seen == [(s, total) for s in range(1, total + 1)]
        outs[strength] = _arr(out, "j")
        assert outs[strength].shape == (SIZE, SIZE, 3)
    assert not np.array_equal(outs[0.5], outs[1.0])
    # The same call made the plain diffusers way on the engine's img2img pipeline.
    pipe = task_pipeline(engine.get_model("demo"), "img2img", engine.settings)
    ref = pipe(
        "a cat",
        image=image,
        strength=0.5,
        num_inference_steps=STEPS,
        guidance_scale=7.5,
        generator=torch.Generator().manual_seed(7),
    ).images[0]
    assert np.array_equal(np.asarray(ref), outs[0.5])


@pytest.mark.parametrize("model", ["demo", "inpaint"])  # 4-channel and 9-channel UNets
def test_inpaint_keeps_pixels_outside_the_mask_exactly(engine: DiffusersEngine, model: str) -> None:
    image, mask = _noise(2, SIZE, SIZE), _mask(SIZE, SIZE)
    item = BatchItem("j", "a red house", "", [3], image, mask)
    kept = _arr(engine.generate(_req(model, "inpaint", [item], mask_blur=2), _none), "j")
    raw = _arr(
        engine.generate(_req(model, "inpaint", [item], mask_blur=2, keep_unmasked=False), _none),
        "j",
    )
    soft = np.asarray(blur_mask(mask, 2))
    outside, inside = soft == 0, soft == 255
    original = np.asarray(image)
    assert outside.sum() > 0 and inside.sum() > 0
    assert np.array_equal(kept[outside], original[outside])
    assert np.array_equal(kept[inside], raw[inside])
    assert not np.array_equal(kept[inside], original[inside])
    assert not np.array_equal(raw[outside], original[outside])  # the VAE round trip
    # keep_unmasked=False is the pipeline's raw output for the blurred mask.
    pipe = task_pipeline(engine.get_model(model), "inpaint", engine.settings)
    ref = pipe(
        "a red house",
        image=image,
        mask_image=Image.fromarray(soft),
        width=SIZE,
        height=SIZE,
        num_inference_steps=STEPS,
        guidance_scale=7.5,
        generator=torch.Generator().manual_seed(3),
    ).images[0]
    assert np.array_equal(np.asarray(ref), raw)


@pytest.mark.parametrize(("model", "factor", "w", "h"), [("x4", 4, 16, 8), ("x2", 2, 32, 32)])
def test_untiled_upscale_is_the_pipelines_output(
    engine: DiffusersEngine, model: str, factor: int, w: int, h: int
) -> None:
    low = _noise(4, w, h)  # one tile
    req = _req(
        model,
        "upscale",
        [BatchItem("j", "sharp", "", [5], low)],
        width=w * factor,
        height=h * factor,
        noise_level=30,
    )
    out = _arr(engine.generate(req, _none), "j")
    assert out.shape == (h * factor, w * factor, 3)
    pipe = engine.get_model(model).pipe
    extra = {"noise_level": 30} if model == "x4" else {}
    ref = pipe(
        "sharp",
        image=low,
        num_inference_steps=STEPS,
        guidance_scale=7.5,
        generator=torch.Generator().manual_seed(5),
        **extra,
    ).images[0]
    assert np.array_equal(np.asarray(ref), out)


# --- progress counts what diffusers runs ---


@contextmanager
def _diffusers_progress(pipe: Any) -> Iterator[list[list[int]]]:
    """Record each call's progress-bar total and its updates: diffusers' own count."""
    bars: list[list[int]] = []

    class Bar:
        def __init__(self, total: int) -> None:
            bars.append([int(total), 0])

        def __enter__(self) -> Bar:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

        def update(self) -> None:
            bars[-1][1] += 1

    pipe.progress_bar = lambda iterable=None, total=None: Bar(total)
    try:
        yield bars
    finally:
        del pipe.progress_bar


@pytest.mark.parametrize("scheduler", SCHEDULER_NAMES)
def test_reported_steps_are_the_steps_diffusers_runs(
    engine: DiffusersEngine, scheduler: str
) -> None:
    """For every scheduler: on_step totals = domain steps_run = diffusers' progress bar
    (heun runs 2 UNet calls a step, pndm one warm-up call more: still N steps)."""
    image, mask = _noise(5, 16, 16), _mask(16, 16)
    cases = [
        ("demo", "txt2img", 1.0),
        ("demo", "img2img", 0.5),
        ("inpaint", "inpaint", 0.75),
        ("x4", "upscale", 1.0),
    ]
    for model, task, strength in cases:
        width = 64 if model == "x4" else 16
        req = _req(
            model,
            task,
            [BatchItem("j", "x", "", [1], image, mask)],
            width=width,
            height=width,
            scheduler=scheduler,
            steps=6,
            strength=strength,
        )
        pipe = task_pipeline(engine.get_model(model), task, engine.settings)
        seen, on_step = _recorder()
        with _diffusers_progress(pipe) as bars:
            engine.generate(req, on_step)
        expected = steps_run(6, strength if task in ("img2img", "inpaint") else None)
        assert bars == [[expected, expected]], (model, task, strength)
        assert seen == [(s, expected) for s in range(1, expected + 1)], (model, task, strength)


# --- batch invariance ---


@pytest.mark.parametrize(
    ("model", "task", "w", "h", "factor"),
    [
        ("demo", "img2img", SIZE, SIZE, 1),
        ("demo", "inpaint", SIZE, SIZE, 1),
        ("inpaint", "inpaint", SIZE, SIZE, 1),
        ("x4", "upscale", 24, 16, 4),  # two tiles
        ("x2", "upscale", 48, 32, 2),  # two tiles
    ],
)
def test_batched_images_equal_single_ones(
    engine: DiffusersEngine, model: str, task: str, w: int, h: int, factor: int
) -> None:
    a_img, b_img, mask = _noise(10, w, h), _noise(11, w, h), _mask(w, h)
    a = BatchItem("a", "a cat", "", [5, 6], a_img, mask)
    b = BatchItem("b", "a dog", "blurry", [9], b_img, mask)
    size = {"width": w * factor, "height": h * factor, "strength": 0.75}
    full = engine.generate(_req(model, task, [a, b], **size), _none)
    for item in (a, b):
        for k, seed in enumerate(item.seeds):
            one = BatchItem(
                item.job_id, item.prompt, item.negative_prompt, [seed], item.image, item.mask
            )
            alone = engine.generate(_req(model, task, [one], **size), _none)
            assert np.array_equal(_arr(full, item.job_id, k), _arr(alone, item.job_id))
    assert _arr(full, "a").shape == (h * factor, w * factor, 3)
    assert not np.array_equal(_arr(full, "a", 0), _arr(full, "a", 1))  # seeds differ


def test_sdxl_edits_through_its_own_pipelines(edit_models_dir: Path) -> None:
    """SDXL's img2img/inpaint pipelines (two encoders, pooled and size conditioning)
    come from the SDXL txt2img pipeline, share its weights and batch invariantly."""
    info = describe("xl", str(edit_models_dir / "xl"))
    assert info.family == "sdxl" and info.tasks == ("txt2img", "img2img", "inpaint")
    eng = DiffusersEngine(Settings(device="cpu"), Catalog(info))
    image, mask = _noise(20, SIZE, SIZE), _mask(SIZE, SIZE)
    a = BatchItem("a", "a cat", "", [1, 2], _noise(21, SIZE, SIZE), mask)
    b = BatchItem("b", "a dog", "", [3], image, mask)
    for task, cls in (
        ("img2img", "StableDiffusionXLImg2ImgPipeline"),
        ("inpaint", "StableDiffusionXLInpaintPipeline"),
    ):
        full = eng.generate(_req("xl", task, [a, b], strength=0.75, scheduler="euler"), _none)
        alone = eng.generate(_req("xl", task, [b], strength=0.75, scheduler="euler"), _none)
        assert np.array_equal(_arr(full, "b"), _arr(alone, "b"))
        model = eng.get_model("xl")
        derived = model.derived[task]
        assert type(derived).__name__ == cls
        assert derived.text_encoder_2 is model.pipe.text_encoder_2
        assert derived.unet is model.pipe.unet
    soft = np.asarray(mask) == 0
    assert np.array_equal(_arr(full, "b")[soft], np.asarray(image)[soft])


# --- one copy of the weights ---


def _params(module: torch.nn.Module) -> set[int]:
    return {p.data_ptr() for p in module.parameters()}


def test_editing_pipelines_share_the_loaded_weights(
    engine: DiffusersEngine, demo_model_dir: Path
) -> None:
    model = engine.get_model("demo")
    img2img = task_pipeline(model, "img2img", engine.settings)
    inpaint = task_pipeline(model, "inpaint", engine.settings)
    assert type(img2img).__name__ == "StableDiffusionImg2ImgPipeline"
    assert type(inpaint).__name__ == "StableDiffusionInpaintPipeline"
    assert task_pipeline(model, "img2img", engine.settings) is img2img  # derived once
    for name in ("unet", "vae", "text_encoder"):
        base = getattr(model.pipe, name)
        for derived in (img2img, inpaint):
            assert getattr(derived, name) is base
            assert _params(getattr(derived, name)) == _params(base)
    # RSS: deriving both pipelines on a freshly loaded model adds far less than one copy
    # of the weights (imports are warm: the module engine derived them already).
    fresh = DiffusersEngine(Settings(device="cpu"), Catalog(describe("d", str(demo_model_dir))))
    loaded = fresh.get_model("d")
    weights = sum(
        p.numel() * p.element_size()
        for m in (loaded.pipe.unet, loaded.pipe.vae, loaded.pipe.text_encoder)
        for p in m.parameters()
    )
    proc = psutil.Process()
    gc.collect()
    before = proc.memory_info().rss
    task_pipeline(loaded, "img2img", fresh.settings)
    task_pipeline(loaded, "inpaint", fresh.settings)
    gc.collect()
    assert proc.memory_info().rss - before < weights / 2


# --- tiling ---


def test_tiled_upscale_bounds_what_one_call_sees(
    engine: DiffusersEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 40x24 input with 16-pixel tiles runs as 3x2 tiles of 16 pixels (the x4 UNet
    works at input resolution), and the output is still exactly 4x."""
    unet = engine.get_model("x4").pipe.unet
    shapes: list[tuple[int, int]] = []
    forward = unet.forward

    def spy(sample: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        shapes.append((int(sample.shape[-2]), int(sample.shape[-1])))
        return forward(sample, *args, **kwargs)

    monkeypatch.setattr(unet, "forward", spy)
    item = BatchItem("j", "x", "", [1], _noise(12, 40, 24))
    seen, on_step = _recorder()
    out = engine.generate(_req("x4", "upscale", [item], width=160, height=96), on_step)
    assert out.items["j"].images[0].size == (160, 96)
    assert set(shapes) == {(16, 16)}
    assert seen[-1] == (6 * STEPS, 6 * STEPS)  # 6 tiles x 4 steps
    # One piece when the tile setting allows: the UNet sees the whole input.
    shapes.clear()
    monkeypatch.setattr(engine, "settings", Settings(device="cpu", upscale_tile_size=64))
    engine.generate(_req("x4", "upscale", [item], width=160, height=96), _none)
    assert set(shapes) == {(24, 40)}


def test_cancel_in_a_later_tile_stops_the_upscale(engine: DiffusersEngine) -> None:
    seen: list[int] = []

    def cancel(step: int, total: int) -> set[str]:
        seen.append(step)
        return {"j"} if step == STEPS + 1 else set()

    item = BatchItem("j", "x", "", [1], _noise(13, 48, 48))
    out = engine.generate(_req("x2", "upscale", [item], width=96, height=96), cancel)
    assert out.items == {} and out.canceled == {"j"}
    assert seen == list(range(1, STEPS + 2))


# --- warm-up, compile, errors ---


def test_each_family_loads_its_pipeline_and_warms_up(engine: DiffusersEngine) -> None:
    for name, cls in (
        ("inpaint", "StableDiffusionInpaintPipeline"),
        ("x4", "StableDiffusionUpscalePipeline"),
        ("x2", "StableDiffusionLatentUpscalePipeline"),
    ):
        model = engine.get_model(name)
        assert type(model.pipe).__name__ == cls
        engine._warm_up(model)


def test_compiled_unet_serves_editing_without_recompiling(
    demo_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """torch_compile: the txt2img warm-up compiles the UNet once; img2img and inpaint
    (derived pipelines, channels-last latents from the VAE encoder) reuse that graph.
    The eager backend keeps this fast: dynamo's guards are the same as inductor's."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))
    eng = DiffusersEngine(
        Settings(device="cpu", torch_compile=True), Catalog(describe("c", str(demo_model_dir)))
    )
    eng.load()
    assert counters["stats"]["unique_graphs"] == 1
    image, mask = _noise(14, 64, 64), _mask(64, 64)
    for task in ("img2img", "inpaint"):
        req = _req(
            "c",
            task,
            [BatchItem("j", "x", "", [1], image, mask)],
            width=64,
            height=64,
            scheduler="euler",
            steps=2,
        )
        assert eng.generate(req, _none).items["j"].images[0].size == (64, 64)
    assert counters["stats"]["unique_graphs"] == 1
    torch._dynamo.reset()


def test_editing_errors_are_mapped(
    engine: DiffusersEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipe = engine.get_model("x4").pipe
    item = BatchItem("j", "x", "", [1], _noise(15, 16, 16))

    def oom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("CUDA out of memory. Tried to allocate 2 GiB")

    monkeypatch.setattr(type(pipe), "__call__", oom)
    with pytest.raises(OutOfMemory):
        engine.generate(_req("x4", "upscale", [item], width=64, height=64), _none)
    monkeypatch.undo()

    import diffusers

    model = engine.get_model("demo")
    monkeypatch.setattr(model, "derived", {})

    def broken(*args: object, **kwargs: object) -> None:
        raise ValueError("no such component")

    monkeypatch.setattr(diffusers.AutoPipelineForImage2Image, "from_pipe", broken)
    item = BatchItem("j", "x", "", [1], _noise(15, SIZE, SIZE))
    with pytest.raises(GenerationFailed, match="no such component"):
        engine.generate(_req("demo", "img2img", [item]), _none)
