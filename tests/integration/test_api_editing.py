"""Editing jobs over real HTTP: inputs as base64 JSON, multipart or earlier image ids,
stored as blobs and referenced by the job; task rules refused at the edge."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from typing import Any

import pytest
from PIL import Image

from tests.integration.live import LiveService

Factory = Callable[..., LiveService]


def png(size: tuple[int, int] = (64, 64), color: Any = (200, 40, 40), mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, format="PNG")
    return buf.getvalue()


def mask_png(size: tuple[int, int] = (64, 64)) -> bytes:
    im = Image.new("L", size, 0)
    im.paste(255, (size[0] // 2, 0, size[0], size[1]))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture
def svc(live_factory: Factory) -> LiveService:
    from sdserve.engine.fake import FakeEngine

    live = live_factory()
    live.start_workers(FakeEngine())
    return live


def _stored_png(svc: LiveService, image_id: str) -> Image.Image:
    with svc.client() as c:
        r = c.get(f"/v1/images/{image_id}")
    assert r.status_code == 200, r.text
    return Image.open(io.BytesIO(r.content))


def test_img2img_json_base64_stores_the_input_and_reports_steps_run(svc: LiveService) -> None:
    body = {
        "task": "img2img",
        "prompt": "a blue circle",
        "image": "data:image/png;base64," + b64(png((96, 64))),
        "num_inference_steps": 10,
        "seed": 3,
    }
    with svc.client() as c:
        r = c.post("/v1/generate", json=body)
    assert r.status_code == 200, r.text
    params = r.json()["parameters"]
    assert (params["task"], params["width"], params["height"]) == ("img2img", 96, 64)
    assert params["strength"] == 0.75 and params["steps_run"] == 7
    assert params["mask"] is None and params["mask_blur"] is None
    stored = _stored_png(svc, params["image"])  # the input is a blob, not in the row
    assert stored.size == (96, 64) and stored.getpixel((0, 0)) == (200, 40, 40)
    out = Image.open(io.BytesIO(base64.b64decode(r.json()["images"][0])))
    assert out.size == (96, 64)


def test_inpaint_multipart_with_mask(svc: LiveService) -> None:
    files = {"image": ("room.png", png(), "image/png"), "mask": ("m.png", mask_png(), "image/png")}
    data = {"task": "inpaint", "prompt": "a yellow square", "num_inference_steps": "4", "seed": "5"}
    with svc.client() as c:
        r = c.post("/v1/jobs", data=data, files=files)
        assert r.status_code == 202, r.text
        job = svc.wait_status(r.json()["id"], {"succeeded"})
    params = job["parameters"]
    assert params["task"] == "inpaint" and params["num_inference_steps"] == 4
    assert params["strength"] == 1.0 and params["mask_blur"] == 4
    assert params["keep_unmasked"] is True
    mask = _stored_png(svc, params["mask"])
    assert mask.mode == "L" and mask.getpixel((0, 0)) == 0 and mask.getpixel((63, 0)) == 255


def test_an_earlier_output_is_an_input_by_id(svc: LiveService) -> None:
    with svc.client() as c:
        first = c.post("/v1/generate", json={"prompt": "a red square", "seed": 1})
        image_id = first.json()["image_ids"][0]
        r = c.post(
            "/v1/generate",
            json={"task": "img2img", "prompt": "a red square", "image_id": image_id},
        )
    assert r.status_code == 200, r.text
    assert r.json()["parameters"]["image"] == image_id


def test_identical_editing_jobs_batch_together(svc: LiveService) -> None:
    """Different inputs, same parameters: one batch (the batch key ignores inputs)."""
    engine = svc.workers[0].engine
    svc.stop_workers.set()
    for t in svc.worker_threads:
        t.join(10)
    ids = []
    with svc.client() as c:
        for color in ((255, 0, 0), (0, 255, 0), (0, 0, 255)):
            body = {"task": "img2img", "prompt": "x", "image": b64(png(color=color)), "seed": 1}
            ids.append(c.post("/v1/jobs", json=body).json()["id"])
    calls_before = len(engine.calls)  # type: ignore[attr-defined]
    svc.stop_workers.clear()
    svc.worker_threads.clear()
    svc.start_workers(engine)
    for job_id in ids:
        svc.wait_status(job_id, {"succeeded"})
    batches = engine.calls[calls_before:]  # type: ignore[attr-defined]
    assert [len(b.items) for b in batches] == [3]
    assert {it.image.getpixel((0, 0)) for it in batches[0].items} == {
        (255, 0, 0),
        (0, 255, 0),
        (0, 0, 255),
    }


BAD: list[tuple[str, dict[str, Any], str]] = [
    ("img2img without image", {"task": "img2img"}, "image"),
    ("txt2img with image", {"image_id": "0" * 32 + ".png"}, "image"),
    ("inpaint without mask", {"task": "inpaint", "image_id": "0" * 32 + ".png"}, "mask"),
    ("strength on txt2img", {"strength": 0.5}, "strength"),
    ("strength zero", {"task": "img2img", "image": "eA==", "strength": 0}, "strength"),
    ("strength above 1", {"task": "img2img", "image": "eA==", "strength": 1.5}, "strength"),
    ("mask_blur on img2img", {"task": "img2img", "image": "eA==", "mask_blur": 2}, "mask_blur"),
    ("noise_level on txt2img", {"noise_level": 20}, "noise_level"),
    ("both image and image_id", {"task": "img2img", "image": "eA==", "image_id": "x"}, "image"),
    ("unknown image id", {"task": "img2img", "image_id": "f" * 32 + ".png"}, "image_id"),
    ("traversal image id", {"task": "img2img", "image_id": "../../etc/passwd"}, "image_id"),
    ("bad base64", {"task": "img2img", "image": "!!not base64!!"}, "image"),
    ("not an image", {"task": "img2img", "image": b64(b"hello world")}, "image"),
    (
        "upscale on a model that cannot",
        {"task": "upscale", "model": "tiny", "image": b64(png())},
        "model",
    ),
    ("upscale with width", {"task": "upscale", "image": b64(png()), "width": 128}, "width"),
    ("tiny input", {"task": "img2img", "image": b64(png((40, 40)))}, "image"),
    (
        "steps x strength < 1",
        {"task": "img2img", "image": b64(png()), "strength": 0.05, "num_inference_steps": 10},
        "strength",
    ),
    (
        "mask size mismatch",
        {"task": "inpaint", "image": b64(png()), "mask": b64(mask_png((64, 32)))},
        "mask",
    ),
]


@pytest.mark.parametrize(("name", "extra", "field"), BAD, ids=[b[0] for b in BAD])
def test_editing_input_errors_are_422_naming_the_field(
    svc: LiveService, name: str, extra: dict[str, Any], field: str
) -> None:
    with svc.client() as c:
        for path in ("/v1/generate", "/v1/jobs"):
            r = c.post(path, json={"prompt": "x", **extra})
            assert r.status_code == 422, (name, r.text)
            fields = [f["field"] for f in r.json()["error"]["fields"]]
            assert field in fields, (name, r.json())
        assert c.get("/healthz").status_code == 200


def test_refused_upload_leaves_no_blob(svc: LiveService) -> None:
    blobs_dir = svc.services.settings.resolved_images_dir
    before = sorted(p.name for p in blobs_dir.rglob("*.png"))
    body = {"task": "img2img", "image": b64(png()), "strength": 0.01, "num_inference_steps": 5}
    with svc.client() as c:
        assert c.post("/v1/jobs", json=body).status_code == 422
    assert sorted(p.name for p in blobs_dir.rglob("*.png")) == before


def test_unsupported_content_type_is_415(svc: LiveService) -> None:
    with svc.client() as c:
        r = c.post("/v1/jobs", content=b"prompt=x", headers={"content-type": "text/plain"})
    assert r.status_code == 415 and r.json()["error"]["type"] == "unsupported_media_type"


def test_strict_json_types(svc: LiveService) -> None:
    with svc.client() as c:
        for field, value in (("width", "64"), ("num_inference_steps", True), ("seed", 1.5)):
            r = c.post("/v1/jobs", json={"prompt": "x", field: value})
            assert r.status_code == 422, (field, r.text)
            assert r.json()["error"]["fields"][0]["field"] == field
        r = c.post("/v1/jobs", content=b'{"prompt": "x", "guidance_scale": NaN}')
        assert r.status_code == 422
        assert "finite" in r.json()["error"]["fields"][0]["message"]
