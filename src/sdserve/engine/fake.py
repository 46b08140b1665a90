"""FakeEngine: a torch-free GenerationEngine for queue/worker tests and benchmarks.

Images are deterministic gradients derived from (prompt, negative prompt, seed, size),
so "same request + seed gives the same image, batched or not" holds by construction
and tests can compare bytes. ``on_step`` and cancellation behave as in DiffusersEngine.

Editing tasks follow the real engine's rules on the same inputs: img2img mixes the
input with the gradient by ``strength``; inpaint does the same, then keeps the pixels
outside the (blurred) mask exactly (engine/editing.py) unless ``keep_unmasked`` is
off; upscale resizes the input to the output size. Progress counts the steps that
``strength`` leaves, as diffusers does.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from dataclasses import replace

from PIL import Image

from sdserve.domain.errors import InvalidRequest
from sdserve.domain.requests import steps_run
from sdserve.engine.base import (
    BatchItem,
    BatchOutput,
    BatchRequest,
    ItemOutput,
    ModelInfo,
    StepCallback,
)
from sdserve.engine.editing import blur_mask, conform, keep_unmasked
from sdserve.engine.previews import PreviewClock, preview_sink

FAKE_MAX_TOKENS = 77


def fake_image(
    prompt: str, negative_prompt: str, seed: int, width: int, height: int
) -> Image.Image:
    """A horizontal gradient between two colours picked by hashing the inputs."""
    digest = hashlib.sha256(f"{prompt}\0{negative_prompt}\0{seed}".encode()).digest()
    a, b = digest[:3], digest[3:6]
    row = bytearray()
    for x in range(width):
        f = x / max(width - 1, 1)
        row += bytes(round(a[c] + (b[c] - a[c]) * f) for c in range(3))
    return Image.frombytes("RGB", (width, height), bytes(row) * height)


class FakeEngine:
    """Deterministic, instant (or ``step_delay`` seconds per step) generation."""

    def __init__(
        self,
        models: list[ModelInfo] | None = None,
        step_delay: float = 0.0,
        fail_with: Exception | None = None,
        max_loaded: int = 1,
    ) -> None:
        # No list given: serve any model name (benchmarks and API tests use the
        # deployment's catalog names).
        self._any_model = models is None
        self._models = models or [ModelInfo("fake", "fake", "sd1", 64, 64)]
        self.step_delay = step_delay
        self.fail_with = fail_with  # raised by generate(), to test error paths
        self.calls: list[BatchRequest] = []
        self.max_loaded = max_loaded
        self._loaded: OrderedDict[str, None] = OrderedDict()  # LRU, as DiffusersEngine
        self._ready = False

    def load(self) -> None:
        self._use(self._models[0].name)
        self._ready = True

    def ready(self) -> bool:
        return self._ready

    def loaded_models(self) -> list[str]:
        return list(self._loaded)

    def _use(self, name: str) -> None:
        self._loaded[name] = None
        self._loaded.move_to_end(name)
        while len(self._loaded) > self.max_loaded:
            self._loaded.popitem(last=False)

    def models(self) -> list[ModelInfo]:
        return [replace(m, loaded=self._ready) for m in self._models]

    def generate(self, request: BatchRequest, on_step: StepCallback) -> BatchOutput:
        if not self._any_model:
            info = next((m for m in self._models if m.name == request.model), None)
            if info is None:
                raise InvalidRequest.single("model", f"unknown model {request.model!r}")
            if request.task not in info.tasks:
                raise InvalidRequest.single(
                    "task",
                    f"model {info.name!r} cannot {request.task}; it can: " + ", ".join(info.tasks),
                )
        self.calls.append(request)
        self._use(request.model)
        if self.fail_with is not None:
            raise self.fail_with
        _check_inputs(request)
        job_ids = {it.job_id for it in request.items}
        canceled: set[str] = set()
        editing = request.task in ("img2img", "inpaint")
        total = steps_run(request.num_inference_steps, request.strength if editing else None)
        sink = preview_sink(on_step)
        clock = PreviewClock(sink) if sink is not None else None
        for step in range(1, total + 1):
            if self.step_delay:
                time.sleep(self.step_delay)
            if sink is not None and clock is not None and clock.due():
                for it in request.items:
                    if it.job_id not in canceled:
                        sink(it.job_id, _preview(request, it, step / total))
            canceled |= on_step(step, total) & job_ids
            if canceled == job_ids:
                return BatchOutput(items={}, canceled=canceled)
        out: dict[str, ItemOutput] = {}
        for it in request.items:
            if it.job_id in canceled:
                continue
            images = [_edit(request, it, s) for s in it.seeds]
            warnings = []
            # Same rule as the real engine, with words standing in for tokens.
            if len(it.prompt.split()) + 2 > FAKE_MAX_TOKENS:
                warnings.append(f"prompt truncated to {FAKE_MAX_TOKENS} tokens")
            out[it.job_id] = ItemOutput(it.job_id, images, warnings)
        return BatchOutput(items=out, canceled=canceled)


def _preview(request: BatchRequest, item: BatchItem, done: float) -> Image.Image:
    """The job's first image fading in from grey as its steps go by."""
    final = _edit(request, item, item.seeds[0])
    return Image.blend(Image.new("RGB", final.size, (128, 128, 128)), final, done)


def _check_inputs(req: BatchRequest) -> None:
    if req.task != "txt2img" and any(it.image is None for it in req.items):
        raise InvalidRequest.single("image", f"{req.task} needs an input image")
    if req.task == "inpaint" and any(it.mask is None for it in req.items):
        raise InvalidRequest.single("mask", "inpaint needs a mask (white = repaint)")


def _edit(req: BatchRequest, it: BatchItem, seed: int) -> Image.Image:
    size = (req.width, req.height)
    if req.task == "upscale" and it.image is not None:
        return it.image.convert("RGB").resize(size, Image.Resampling.BICUBIC)
    made = fake_image(it.prompt, it.negative_prompt, seed, req.width, req.height)
    if req.task == "txt2img" or it.image is None:
        return made
    original = conform(it.image, size)
    raw = Image.blend(original, made, req.strength)
    if req.task == "inpaint" and req.keep_unmasked and it.mask is not None:
        return keep_unmasked(raw, original, blur_mask(conform(it.mask, size, "L"), req.mask_blur))
    return raw
