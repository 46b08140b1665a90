"""Every editing task through the real engine over real HTTP (tiny random models made
by the project, loaded through the same loader as real checkpoints): sync and async,
JSON and multipart, image-id inputs, and batched edits identical to single ones."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.integration.live import LiveService
from tests.integration.test_api_editing import b64, mask_png

Factory = Callable[..., LiveService]


def scene(size: tuple[int, int] = (64, 64), seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def _decode(data: str | bytes) -> np.ndarray:
    raw = base64.b64decode(data) if isinstance(data, str) else data
    return np.asarray(Image.open(io.BytesIO(raw)).convert("RGB"))


@pytest.fixture
def edit_svc(live_factory: Factory, edit_models_dir: Path) -> LiveService:
    from sdserve.engine.pipelines import DiffusersEngine

    svc = live_factory(models_dir=str(edit_models_dir), max_loaded_models=4)
    svc.start_workers(DiffusersEngine(svc.services.settings, svc.services.catalog, max_loaded=4))
    return svc


def test_models_list_their_tasks(edit_svc: LiveService) -> None:
    with edit_svc.client() as c:
        models = {m["name"]: m["tasks"] for m in c.get("/v1/models").json()["data"]}
    assert models["tiny"] == ["txt2img", "img2img", "inpaint"]
    assert models["inpaint"] == ["inpaint"]
    assert models["x4"] == models["x2"] == ["upscale"]


def test_img2img_sync_json(edit_svc: LiveService) -> None:
    body = {"task": "img2img", "prompt": "a room", "image": b64(scene((96, 64))), "seed": 1}
    with edit_svc.client() as c:
        r = c.post("/v1/generate", json={**body, "num_inference_steps": 4, "strength": 0.5})
    assert r.status_code == 200, r.text
    out = r.json()
    assert _decode(out["images"][0]).shape == (64, 96, 3)
    assert out["parameters"]["steps_run"] == 2


@pytest.mark.parametrize("model", ["tiny", "inpaint"])  # 4-channel and 9-channel UNets
def test_inpaint_keeps_pixels_outside_the_mask(edit_svc: LiveService, model: str) -> None:
    image = scene(seed=3)
    files = {"image": ("i.png", image, "image/png"), "mask": ("m.png", mask_png(), "image/png")}
    data = {"task": "inpaint", "prompt": "a lamp", "model": model, "num_inference_steps": "3"}
    with edit_svc.client() as c:
        r = c.post("/v1/jobs", data={**data, "seed": "4"}, files=files)
        assert r.status_code == 202, r.text
        job = edit_svc.wait_status(r.json()["id"], {"succeeded", "failed"})
        assert job["status"] == "succeeded", job
        out = _decode(c.get(job["result"]["images"][0]["url"]).content)
    original = _decode(image)
    # The mask repaints the right half; blur 4 softens 2-3 sigma around the edge.
    assert np.array_equal(out[:, :20], original[:, :20])
    assert not np.array_equal(out[:, 40:], original[:, 40:])


def test_upscale_x4_multipart_async(edit_svc: LiveService) -> None:
    files = {"image": ("small.png", scene((64, 48)), "image/png")}
    data = {"task": "upscale", "prompt": "sharp", "model": "x4", "num_inference_steps": "2"}
    with edit_svc.client() as c:
        r = c.post("/v1/jobs", data=data, files=files)
        assert r.status_code == 202, r.text
        job = edit_svc.wait_status(r.json()["id"], {"succeeded", "failed"})
        assert job["status"] == "succeeded", job
        assert (job["parameters"]["width"], job["parameters"]["height"]) == (256, 192)
        assert job["parameters"]["noise_level"] == 20
        assert _decode(c.get(job["result"]["images"][0]["url"]).content).shape == (192, 256, 3)


def test_upscale_x2_of_an_earlier_output_by_id(edit_svc: LiveService) -> None:
    with edit_svc.client() as c:
        first = c.post("/v1/generate", json={"prompt": "a cat", "num_inference_steps": 2})
        image_id = first.json()["image_ids"][0]
        r = c.post(
            "/v1/generate",
            json={
                "task": "upscale",
                "prompt": "",
                "model": "x2",
                "image_id": image_id,
                "num_inference_steps": 2,
            },
        )
    assert r.status_code == 200, r.text
    params = r.json()["parameters"]
    assert (params["width"], params["height"]) == (128, 128)
    assert params["scheduler"] == "euler" and params["guidance_scale"] == 0.0
    assert _decode(r.json()["images"][0]).shape == (128, 128, 3)


@pytest.mark.parametrize("task", ["img2img", "inpaint"])
def test_batched_edits_are_identical_to_single(
    live_factory: Factory, edit_models_dir: Path, task: str
) -> None:
    from sdserve.engine.pipelines import DiffusersEngine

    def body(seed: int) -> dict[str, Any]:
        out: dict[str, Any] = {
            "task": task,
            "prompt": f"scene {seed}",
            "image": b64(scene(seed=seed)),
            "seed": seed,
            "num_inference_steps": 4,
            "strength": 0.75,
        }
        if task == "inpaint":
            out["mask"] = b64(mask_png())
        return out

    seeds = [1, 2, 3]
    batched = live_factory(max_batch_images=8, models_dir=str(edit_models_dir))
    with batched.client() as c:
        ids = [c.post("/v1/jobs", json=body(s)).json()["id"] for s in seeds]
        batched.start_workers(DiffusersEngine(batched.services.settings, batched.services.catalog))
        jobs = [batched.wait_status(i, {"succeeded"}) for i in ids]
        assert batched.workers[0].batches_done == 1  # three inputs, one batch
        together = [_decode(c.get(j["result"]["images"][0]["url"]).content) for j in jobs]

    single = live_factory(max_batch_images=1, models_dir=str(edit_models_dir))
    single.start_workers(DiffusersEngine(single.services.settings, single.services.catalog))
    with single.client() as c:
        alone = []
        for s in seeds:
            job = single.wait_status(c.post("/v1/jobs", json=body(s)).json()["id"], {"succeeded"})
            alone.append(_decode(c.get(job["result"]["images"][0]["url"]).content))
    for a, b in zip(together, alone, strict=True):
        assert np.array_equal(a, b)
    assert not np.array_equal(together[0], together[1])
