"""No user input can produce a 500: random JSON bodies, headers and ids over real HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sdserve.config import Settings
from sdserve.engine.fake import FakeEngine
from tests.conftest import free_port
from tests.integration.live import LiveService, start_live

FIELDS = [
    "prompt",
    "negative_prompt",
    "width",
    "height",
    "num_inference_steps",
    "guidance_scale",
    "seed",
    "num_images",
    "scheduler",
    "model",
    "priority",
    "output_format",
    "callback_url",
]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.sampled_from(["a red circle", "euler_a", "high", "png", "http://[::1]/x", "64", "1e9"]),
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)
bodies = st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=10), json_values, max_size=8)


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Any) -> Iterator[LiveService]:
    live = start_live(
        Settings(
            data_dir=tmp_path_factory.mktemp("fuzz"),
            queue_backend="memory",
            model=str(tiny_model_dir),
            port=free_port(),
            sync_timeout_seconds=5,
            webhook_secret="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            auth="off",
        )
    )
    live.start_workers(FakeEngine())
    yield live
    live.stop()


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=bodies, endpoint=st.sampled_from(["/v1/jobs", "/v1/generate"]))
def test_random_bodies_never_500(svc: LiveService, body: dict[str, Any], endpoint: str) -> None:
    with httpx.Client(base_url=svc.url, timeout=30) as c:
        if "prompt" in body and isinstance(body.get("num_inference_steps"), int):
            body["num_inference_steps"] = min(abs(body["num_inference_steps"]), 3) or 1
        # json.dumps writes NaN/Infinity, which strict JSON parsers must refuse (4xx).
        content = json.dumps(body).encode()
        r = c.post(endpoint, content=content, headers={"content-type": "application/json"})
    assert r.status_code < 500, (body, r.text)
    assert "error" in r.json() or r.status_code in (200, 202)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    job_id=st.text(
        st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters="/?#%\\"),
        min_size=1,
        max_size=60,
    ).filter(lambda s: s.strip(".") != ""),
    key=st.text(max_size=300),
    raw=st.binary(max_size=200),
)
def test_random_ids_headers_and_bytes_never_500(
    svc: LiveService, job_id: str, key: str, raw: bytes
) -> None:
    with httpx.Client(base_url=svc.url, timeout=30) as c:
        for r in (
            c.get(f"/v1/jobs/{job_id}"),
            c.delete(f"/v1/jobs/{job_id}"),
            c.get(f"/v1/images/{job_id}"),
            c.get("/v1/jobs", params={"cursor": job_id, "status": key[:10]}),
            c.post("/v1/jobs", content=raw, headers={"content-type": "application/json"}),
        ):
            assert r.status_code < 500, (job_id, r.status_code, r.text)
        try:
            r = c.post("/v1/jobs", json={"prompt": "x"}, headers={"Idempotency-Key": key})
        except (httpx.LocalProtocolError, UnicodeEncodeError):
            return  # not a header value a client can send
        assert r.status_code < 500, (key, r.text)
