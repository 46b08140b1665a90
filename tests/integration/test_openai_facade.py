"""The official `openai` package, unchanged, against a live sdserve: generate, edit
(mask -> inpaint, none -> img2img), variation, both response formats, models, and
errors raised as the SDK's own exception types."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable

import httpx
import openai
import pytest
from PIL import Image

from sdserve.engine.fake import FakeEngine
from sdserve.security.keys import Role
from tests.integration.live import LiveService

Factory = Callable[..., LiveService]


def png(size: tuple[int, int] = (64, 64), alpha_right_half: bool = False) -> bytes:
    image = Image.new("RGBA", size, (200, 40, 40, 255))
    if alpha_right_half:
        image.paste((0, 0, 0, 0), (size[0] // 2, 0, size[0], size[1]))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def svc(live_factory: Factory) -> LiveService:
    live = live_factory(auth="on")
    live.start_workers(FakeEngine())
    return live


@pytest.fixture
def key(svc: LiveService) -> str:
    return svc.services.keys.create("acme", Role.user).key


def sdk(svc: LiveService, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=svc.url + "/v1", api_key=key, max_retries=0, timeout=60)


def decoded(b64: str | None) -> Image.Image:
    assert b64 is not None
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def test_generate_b64_json_with_sdserve_knobs_echoed(svc: LiveService, key: str) -> None:
    client = sdk(svc, key)
    resp = client.images.generate(
        prompt="a red circle",
        model="dall-e-2",  # OpenAI's name: the deployment's default model
        n=2,
        size="64x64",
        response_format="b64_json",
        extra_body={"seed": 7, "steps": 3, "negative_prompt": "blur", "scheduler": "ddim"},
    )
    assert len(resp.data) == 2
    assert decoded(resp.data[0].b64_json).size == (64, 64)
    assert resp.data[0].revised_prompt == "a red circle"
    extra = resp.model_extra or {}
    assert (extra["seed"], extra["steps"], extra["scheduler"]) == (7, 3, "ddim")
    assert extra["negative_prompt"] == "blur" and extra["model"] == "tiny"
    assert extra["sdserve"]["seeds"] == [7, 8]
    # Same seed, same image: the knobs really reach the job.
    again = client.images.generate(
        prompt="a red circle", size="64x64", response_format="b64_json", extra_body={"seed": 7}
    )
    first = client.images.generate(
        prompt="a red circle", size="64x64", response_format="b64_json", extra_body={"seed": 7}
    )
    assert again.data[0].b64_json == first.data[0].b64_json


def test_generate_url_is_fetchable_with_the_key(svc: LiveService, key: str) -> None:
    resp = sdk(svc, key).images.generate(prompt="a cat", size="64x64", response_format="url")
    url = resp.data[0].url
    assert url is not None and url.startswith(svc.url + "/v1/images/")
    got = httpx.get(url, headers={"Authorization": f"Bearer {key}"})
    assert got.status_code == 200 and got.content[:4] == b"\x89PNG"


def test_edit_with_transparent_mask_inpaints_and_without_mask_img2img(
    svc: LiveService, key: str
) -> None:
    client = sdk(svc, key)
    image = png()
    inpaint = client.images.edit(
        image=("in.png", image, "image/png"),
        mask=("mask.png", png(alpha_right_half=True), "image/png"),
        prompt="a yellow square",
        response_format="b64_json",
        extra_body={"seed": 3, "steps": 4},
    )
    params = (inpaint.model_extra or {})["sdserve"]["parameters"]
    assert params["task"] == "inpaint" and params["mask"] is not None
    out = decoded(inpaint.data[0].b64_json).convert("RGB")
    # Opaque (kept) half of the mask: the input's pixels, exactly (keep_unmasked).
    assert out.getpixel((2, 10)) == (200, 40, 40)
    plain = client.images.edit(
        image=[("in.png", image, "image/png")],  # sent as image[]
        prompt="a yellow square",
        response_format="b64_json",
    )
    assert (plain.model_extra or {})["sdserve"]["parameters"]["task"] == "img2img"


def test_variation(svc: LiveService, key: str) -> None:
    resp = sdk(svc, key).images.create_variation(
        image=("in.png", png((96, 64)), "image/png"), n=1, response_format="b64_json"
    )
    assert decoded(resp.data[0].b64_json).size == (96, 64)
    params = (resp.model_extra or {})["sdserve"]["parameters"]
    assert params["task"] == "img2img" and params["strength"] == 0.6


def test_models_list_and_retrieve(svc: LiveService, key: str) -> None:
    client = sdk(svc, key)
    models = client.models.list()
    tiny = next(m for m in models.data if m.id == "tiny")
    assert tiny.object == "model" and tiny.owned_by == "sdserve"
    assert (tiny.model_extra or {})["tasks"] == ["txt2img", "img2img", "inpaint"]
    assert client.models.retrieve("tiny").id == "tiny"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope")


def test_errors_are_the_sdks_exception_types(svc: LiveService, key: str) -> None:
    client = sdk(svc, key)
    with pytest.raises(openai.BadRequestError) as bad:
        client.images.generate(prompt="x", size="65x64")
    body = bad.value.body
    assert isinstance(body, dict) and body["param"] == "size" and body["code"] == "validation_error"
    assert bad.value.type == "invalid_request_error"
    with pytest.raises(openai.BadRequestError) as many:
        client.images.generate(prompt="x", n=9)
    assert isinstance(many.value.body, dict) and many.value.body["param"] == "n"
    with pytest.raises(openai.BadRequestError) as steps:
        client.images.generate(prompt="x", extra_body={"steps": 0})
    assert isinstance(steps.value.body, dict) and steps.value.body["param"] == "steps"
    with pytest.raises(openai.BadRequestError) as nomask:
        client.images.edit(
            image=("in.png", png(), "image/png"),
            mask=("m.png", png(), "image/png"),  # opaque: nothing to edit
            prompt="x",
        )
    assert isinstance(nomask.value.body, dict) and nomask.value.body["param"] == "mask"
    with pytest.raises(openai.AuthenticationError):
        sdk(svc, "sk-wrong").images.generate(prompt="x")
    reader = svc.services.keys.create("acme", Role.reader).key
    with pytest.raises(openai.PermissionDeniedError):
        sdk(svc, reader).images.generate(prompt="x")


def test_idempotency_key_makes_one_job(svc: LiveService, key: str) -> None:
    client = sdk(svc, key)
    headers = {"Idempotency-Key": "same-one"}
    one = client.images.generate(prompt="a dog", size="64x64", extra_headers=headers)
    two = client.images.generate(prompt="a dog", size="64x64", extra_headers=headers)
    assert (one.model_extra or {})["sdserve"]["job_id"] == (two.model_extra or {})["sdserve"][
        "job_id"
    ]
