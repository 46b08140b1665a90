"""The malformed-image corpus over real HTTP: every case, as JSON base64 and as a
multipart upload, on the sync and async routes, is a 422 naming the field and saying
what was wrong; the service stays healthy and accepts nothing."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import pytest

from tests.corpus.images import Case, malformed_images, mask_image
from tests.integration.live import LiveService

MAX_PIXELS = 2048 * 2048
MAX_BYTES = 2 * 1024 * 1024
CASES = malformed_images(MAX_PIXELS, MAX_BYTES)


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Any) -> Iterator[LiveService]:
    from sdserve.config import Settings
    from tests.conftest import free_port
    from tests.integration.live import start_live

    settings = Settings(
        data_dir=tmp_path_factory.mktemp("corpus"),
        queue_backend="memory",
        model=str(tiny_model_dir),
        port=free_port(),
        max_input_pixels=MAX_PIXELS,
        max_input_bytes=MAX_BYTES,
        webhook_secret="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        auth="off",
    )
    live = start_live(settings)
    yield live
    live.stop()


def _as_text(payload: bytes | str) -> str:
    return payload if isinstance(payload, str) else base64.b64encode(payload).decode()


def _json_body(case: Case) -> dict[str, Any]:
    if case.field == "mask":
        assert case.mask is not None
        return {
            "task": "inpaint",
            "prompt": "x",
            "image": _as_text(mask_image()),
            "mask": _as_text(case.mask),
        }
    return {"task": "img2img", "prompt": "x", "image": _as_text(case.image)}


def _check(r: Any, case: Case, fragment: str | None = None) -> None:
    assert r.status_code == 422, (case.name, r.status_code, r.text[:300])
    error = r.json()["error"]
    assert error["type"] == "validation_error", case.name
    (problem,) = [f for f in error["fields"] if f["field"] == case.field]
    assert (fragment or case.fragment) in problem["message"], (case.name, problem)


@pytest.mark.parametrize("index", range(len(CASES)), ids=[c.name for c in CASES])
def test_malformed_input_is_a_clear_422(svc: LiveService, index: int) -> None:
    case = CASES[index]
    payload = case.mask if case.field == "mask" else case.image
    # Zero bytes sent as base64 is an empty string: refused before any decoding.
    in_json = "is empty (no base64 data)" if payload == b"" else None
    with svc.client() as c:
        path = "/v1/generate" if index % 2 else "/v1/jobs"
        _check(c.post(path, json=_json_body(case)), case, in_json)
        if isinstance(payload, bytes):  # str payloads are JSON-only base64 cases
            task = "inpaint" if case.field == "mask" else "img2img"
            files = {case.field: ("upload", payload, "application/octet-stream")}
            if case.field == "mask":
                files["image"] = ("image.png", mask_image(), "image/png")
            _check(c.post("/v1/jobs", data={"task": task, "prompt": "x"}, files=files), case)


def test_nothing_was_accepted_and_the_service_is_healthy(svc: LiveService) -> None:
    with svc.client() as c:
        assert c.get("/healthz").status_code == 200
        assert c.get("/v1/jobs").json()["data"] == []
    assert len(CASES) >= 40
