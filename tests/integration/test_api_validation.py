"""Bad input: a 422 naming the field and the limit, 413 for big bodies, never a 500."""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.live import LiveService

GOOD: dict[str, Any] = {"prompt": "a red circle", "num_inference_steps": 2}

CASES: list[tuple[str, dict[str, Any], str, Any]] = [
    ("width not multiple of 8", {"width": 100}, "width", None),
    ("height not multiple of 8", {"height": 65}, "height", None),
    ("width too small", {"width": 56}, "width", 64),
    ("width too large", {"width": 2056}, "width", 2048),
    ("height too large", {"height": 4096}, "height", 2048),
    ("pixel budget", {"width": 2048, "height": 2048}, "width", 1024 * 1024),
    ("steps zero", {"num_inference_steps": 0}, "num_inference_steps", 1),
    ("steps too many", {"num_inference_steps": 151}, "num_inference_steps", 150),
    ("guidance negative", {"guidance_scale": -1}, "guidance_scale", 0),
    ("guidance too big", {"guidance_scale": 30.5}, "guidance_scale", 30),
    ("num_images zero", {"num_images": 0}, "num_images", 1),
    ("num_images too many", {"num_images": 9}, "num_images", 8),
    ("seed negative", {"seed": -1}, "seed", 0),
    ("seed too big", {"seed": 2**32}, "seed", 2**32 - 1),
    ("prompt too long", {"prompt": "x" * 2001}, "prompt", 2000),
    ("prompt empty", {"prompt": ""}, "prompt", 1),
    ("unknown field", {"cfg": 7}, "cfg", None),
    ("unknown scheduler", {"scheduler": "magic"}, "scheduler", None),
    ("unknown model", {"model": "sd-nope"}, "model", None),
    ("bad priority", {"priority": "urgent"}, "priority", None),
    ("bad format", {"output_format": "gif"}, "output_format", None),
    ("wrong type", {"width": "wide"}, "width", None),
]


@pytest.fixture(scope="module")
def svc(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Any
) -> Any:  # module-scoped: one server for all validation cases
    from sdserve.config import Settings
    from tests.conftest import free_port
    from tests.integration.live import start_live

    settings = Settings(
        data_dir=tmp_path_factory.mktemp("validation"),
        queue_backend="memory",
        model=str(tiny_model_dir),
        port=free_port(),
        max_pixels=1024 * 1024,
        max_body_bytes=64 * 1024,
        max_upload_bytes=96 * 1024,
        webhook_secret="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        auth="off",
    )
    live = start_live(settings)
    yield live
    live.stop()


@pytest.mark.parametrize("endpoint", ["/v1/generate", "/v1/jobs"])
@pytest.mark.parametrize(("name", "patch", "field", "limit"), CASES, ids=[c[0] for c in CASES])
def test_invalid_field_gets_422_naming_it(
    svc: LiveService, endpoint: str, name: str, patch: dict[str, Any], field: str, limit: Any
) -> None:
    with svc.client() as c:
        r = c.post(endpoint, json={**GOOD, **patch})
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["type"] == "validation_error"
    fields = {f["field"]: f for f in err["fields"]}
    assert field in fields, err
    assert field in err["message"]
    if limit is not None:
        assert fields[field]["limit"] == limit, fields[field]
    # Nothing was queued.
    with svc.client() as c:
        assert c.get("/v1/jobs").json()["data"] == []


def test_unknown_scheduler_and_model_list_valid_names(svc: LiveService) -> None:
    with svc.client() as c:
        sched = c.post("/v1/generate", json={**GOOD, "scheduler": "magic"}).json()
        model = c.post("/v1/generate", json={**GOOD, "model": "nope"}).json()
    assert "dpmpp_2m_karras" in sched["error"]["message"]
    assert "tiny" in model["error"]["message"]


def test_oversized_body_is_413(svc: LiveService) -> None:
    with svc.client() as c:
        r = c.post("/v1/jobs", json={**GOOD, "image": "y" * 100_000})
        assert r.status_code == 413
        assert r.json()["error"]["type"] == "payload_too_large"
        assert r.json()["error"]["limit"] == 96 * 1024  # the image routes' own limit

        def chunks() -> Any:
            for _ in range(100):
                yield b"x" * 1024

        r = c.post("/v1/jobs", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413
        assert c.get("/healthz").status_code == 200


@pytest.mark.parametrize(
    "raw",
    [b"{not json", b"[]", b'"str"', b"null", b'{"prompt": null}', b"\xff\xfe"],
)
def test_garbage_bodies_are_4xx_never_500(svc: LiveService, raw: bytes) -> None:
    with svc.client() as c:
        r = c.post("/v1/jobs", content=raw, headers={"content-type": "application/json"})
    assert 400 <= r.status_code < 500, r.text
    assert "error" in r.json()


def test_bad_callback_url_is_422(svc: LiveService) -> None:
    with svc.client() as c:
        for url in ["ftp://example.com/x", "not a url", "http://127.0.0.1:9/hook"]:
            r = c.post("/v1/jobs", json={**GOOD, "callback_url": url})
            assert r.status_code == 422, (url, r.text)
            assert r.json()["error"]["fields"][0]["field"] == "callback_url"


def test_unknown_job_and_image_are_404(svc: LiveService) -> None:
    with svc.client() as c:
        assert c.get("/v1/jobs/job_nope").status_code == 404
        assert c.delete("/v1/jobs/job_nope").status_code == 404
        assert c.get("/v1/images/../../etc/passwd").status_code == 404
        assert c.get("/v1/images/" + "a" * 32 + ".png").status_code == 404


def test_list_filters_validated(svc: LiveService) -> None:
    with svc.client() as c:
        assert c.get("/v1/jobs", params={"status": "weird"}).status_code == 422
        assert c.get("/v1/jobs", params={"limit": 0}).status_code == 422
        assert c.get("/v1/jobs", params={"cursor": "garbage!"}).status_code == 422
