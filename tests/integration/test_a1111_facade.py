"""The `webuiapi` package, unchanged, against a live sdserve's /sdapi/v1: txt2img,
img2img, inpaint, upscale, options, models, samplers, progress and interrupt, with the
API key as the HTTP Basic password; bad values are 422s naming A1111's fields."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import webuiapi
from PIL import Image

from sdserve.engine.fake import FakeEngine
from sdserve.security.keys import Role
from tests.integration.live import LiveService

Factory = Callable[..., LiveService]


def start(live_factory: Factory, step_delay: float = 0.0, **overrides: Any) -> LiveService:
    live = live_factory(auth="on", **overrides)
    live.start_workers(FakeEngine(step_delay=step_delay))
    return live


def api_for(svc: LiveService, key: str) -> webuiapi.WebUIApi:
    port = int(svc.url.rsplit(":", 1)[1])
    return webuiapi.WebUIApi(host="127.0.0.1", port=port, username="anyone", password=key)


@pytest.fixture
def svc(live_factory: Factory) -> LiveService:
    return start(live_factory)


@pytest.fixture
def api(svc: LiveService) -> webuiapi.WebUIApi:
    return api_for(svc, svc.services.keys.create("acme", Role.user).key)


def test_txt2img_fields_seeds_and_info(api: webuiapi.WebUIApi) -> None:
    result = api.txt2img(
        prompt="a red circle",
        negative_prompt="blur",
        seed=11,
        steps=3,
        cfg_scale=5.0,
        width=64,
        height=96,
        batch_size=2,
        n_iter=2,
        sampler_name="DDIM",
        restore_faces=True,  # unsupported: ignored with a note
    )
    assert len(result.images) == 4 and result.images[0].size == (64, 96)
    info = result.info
    assert info["seed"] == 11 and info["all_seeds"] == [11, 12, 13, 14]
    assert info["sampler_name"] == "DDIM" and info["sdserve"]["scheduler"] == "ddim"
    assert (info["steps"], info["cfg_scale"]) == (3, 5.0)
    assert any(n.startswith("restore_faces") for n in info["notes"])
    assert result.parameters["prompt"] == "a red circle"
    quiet = api.txt2img(prompt="x", steps=1, width=64, height=64, send_images=False)
    assert quiet.images == [] and len(quiet.info["all_seeds"]) == 1
    # seed -1: random, and reported.
    rnd = api.txt2img(prompt="a cat", seed=-1, steps=1, width=64, height=64)
    assert isinstance(rnd.info["seed"], int) and rnd.info["seed"] >= 0


def test_img2img_and_inpaint(api: webuiapi.WebUIApi) -> None:
    image = Image.new("RGB", (64, 64), (200, 40, 40))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (32, 0, 64, 64))
    out = api.img2img(
        images=[image], prompt="a blue room", steps=4, denoising_strength=0.5, width=64, height=64
    )
    assert out.images[0].size == (64, 64) and out.info["denoising_strength"] == 0.5
    assert out.info["is_using_inpainting_conditioning"] is False
    inpainted = api.img2img(
        images=[image], mask_image=mask, prompt="a lamp", steps=4, width=64, height=64, seed=2
    )
    assert inpainted.info["is_using_inpainting_conditioning"] is True
    pixels = inpainted.images[0].convert("RGB")
    assert pixels.getpixel((5, 5)) == (200, 40, 40)  # outside the mask: kept exactly
    # inpainting_mask_invert: black is repainted instead, so the left half changes.
    flipped = api.img2img(
        images=[image],
        mask_image=mask,
        inpainting_mask_invert=1,
        prompt="a lamp",
        steps=4,
        width=64,
        height=64,
        seed=2,
    )
    assert flipped.images[0].convert("RGB").getpixel((60, 5)) == (200, 40, 40)


def test_models_samplers_options(api: webuiapi.WebUIApi) -> None:
    assert "tiny" in [m["model_name"] for m in api.get_sd_models()]
    assert "Euler a" in [s["name"] for s in api.get_samplers()]
    assert api.get_options()["sd_model_checkpoint"] == "tiny"
    api.set_options({"sd_model_checkpoint": "tiny.safetensors [abc123]", "samples_format": "jpg"})
    assert api.get_options()["samples_format"] == "jpg"
    out = api.txt2img(prompt="x", steps=1, width=64, height=64)
    assert out.images[0].format == "JPEG"
    with pytest.raises(RuntimeError) as err:
        api.txt2img(prompt="x", steps=1, override_settings={"sd_model_checkpoint": "nope"})
    assert err.value.args[0] == 422
    assert "sd_model_checkpoint" in err.value.args[1]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"prompt": "x", "steps": 0}, "steps"),
        ({"prompt": "x", "cfg_scale": 99}, "cfg_scale"),
        ({"prompt": "x", "sampler_name": "Warp 9"}, "sampler_name"),
        ({"prompt": "x", "batch_size": 4, "n_iter": 4}, "n_iter"),
        ({"prompt": "x", "width": 65}, "width"),
        ({"prompt": "x", "seed": -2}, "seed"),
        ({"prompt": "x", "steps": "many"}, "steps"),
    ],
)
def test_bad_values_are_422_naming_the_a1111_field(
    svc: LiveService, body: dict[str, Any], field: str
) -> None:
    key = svc.services.keys.create("acme", Role.user).key
    r = httpx.post(svc.url + "/sdapi/v1/txt2img", json=body, auth=("u", key))
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert detail[0]["loc"] == ["body", field], detail


def test_img2img_errors_name_a1111_fields(svc: LiveService) -> None:
    key = svc.services.keys.create("acme", Role.user).key
    url = svc.url + "/sdapi/v1/img2img"
    r = httpx.post(url, json={"prompt": "x"}, auth=("u", key))
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "init_images"]
    r = httpx.post(url, json={"prompt": "x", "init_images": ["bm90IGFuIGltYWdl"]}, auth=("u", key))
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "init_images"]


def test_auth_basic_password_and_roles(svc: LiveService) -> None:
    url = svc.url + "/sdapi/v1/txt2img"
    body = {"prompt": "x", "steps": 1, "width": 64, "height": 64}
    assert httpx.post(url, json=body).status_code == 401
    assert httpx.post(url, json=body, auth=("u", "sk-wrong")).status_code == 401
    reader = svc.services.keys.create("acme", Role.reader).key
    assert httpx.post(url, json=body, auth=("u", reader)).status_code == 403
    assert httpx.get(svc.url + "/sdapi/v1/options", auth=("u", reader)).status_code == 200


def test_extra_single_image_upscales(live_factory: Factory, edit_models_dir: Path) -> None:
    svc = start(live_factory, models_dir=str(edit_models_dir), max_loaded_models=4)
    api = api_for(svc, svc.services.keys.create("acme", Role.user).key)
    names = {u["name"]: u["scale"] for u in api.get_upscalers()}
    # the test models, beside the packaged demo upscaler
    assert {"x4": 4, "x2": 2}.items() <= names.items()
    image = Image.new("RGB", (64, 64), (10, 200, 30))
    out = api.extra_single_image(image=image, upscaling_resize=2)
    assert out.image.size == (128, 128)
    assert "x2" in out.json["html_info"]
    out4 = api.extra_single_image(image=image, upscaler_1="x4", upscaling_resize=2)
    assert out4.image.size == (256, 256) and "ignored" in out4.json["html_info"]


def test_progress_then_interrupt(live_factory: Factory) -> None:
    svc = start(live_factory, step_delay=0.05)
    api = api_for(svc, svc.services.keys.create("acme", Role.user).key)
    idle = api.get_progress()
    assert idle["progress"] == 0 and idle["current_image"] is None
    results: list[Any] = []
    thread = threading.Thread(
        target=lambda: results.append(api.txt2img(prompt="slow", steps=100, width=64, height=64))
    )
    thread.start()
    deadline = time.monotonic() + 30
    progress: dict[str, Any] = {}
    while time.monotonic() < deadline:
        progress = api.get_progress()
        if progress["state"]["sampling_step"] > 0:
            break
        time.sleep(0.02)
    assert progress["state"]["sampling_steps"] == 100 and 0 < progress["progress"] < 1
    assert progress["current_image"] is None  # no previews exist
    # Another tenant sees none of it and cannot interrupt it.
    other = api_for(svc, svc.services.keys.create("beta", Role.user).key)
    assert other.get_progress()["state"]["job"] == ""
    assert other.interrupt()["interrupted"] == []
    assert len(api.interrupt()["interrupted"]) == 1
    thread.join(timeout=30)
    assert results and results[0].images == []
    assert results[0].info["interrupted"] is True
    assert json.loads(results[0].json["info"])["interrupted"] is True


def test_idempotency_key_reuses_the_job(svc: LiveService) -> None:
    key = svc.services.keys.create("acme", Role.user).key
    body = {"prompt": "x", "steps": 1, "width": 64, "height": 64}
    headers = {"Idempotency-Key": "a1111-once"}
    runs = [
        httpx.post(svc.url + "/sdapi/v1/txt2img", json=body, auth=("u", key), headers=headers)
        for _ in range(2)
    ]
    ids = [json.loads(r.json()["info"])["sdserve"]["job_id"] for r in runs]
    assert ids[0] == ids[1] and runs[0].json()["images"] == runs[1].json()["images"]
