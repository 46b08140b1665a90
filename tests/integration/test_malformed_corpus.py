"""Every malformed request in tests/corpus/requests.py, over real HTTP through uvicorn:
a 4xx in the documented error shape (status from the one error table), never a 5xx,
no long input echoed back, and the service healthy afterwards."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest

from sdserve.domain.errors import ERRORS, UnsafeWeights, status_for
from sdserve.engine.fake import FakeEngine
from sdserve.security.keys import Role
from tests.corpus.requests import GOOD, Req, corpus
from tests.integration.live import LiveService

CASES = corpus()


def _send(c: httpx.Client, req: Req, keys: dict[str, str]) -> httpx.Response:
    headers = dict(req.headers)
    if req.role != "none":
        headers.setdefault("authorization", f"Bearer {keys[req.role]}")
    content: bytes | Iterator[bytes] | None = req.body
    if req.chunked and req.body is not None:
        raw = req.body
        content = iter([raw[i : i + 65536] for i in range(0, len(raw), 65536)])
    return c.request(req.method, req.path, content=content, headers=headers, params=req.params)


def test_corpus_is_large_and_covers_every_route() -> None:
    assert len(CASES) >= 200
    paths = {c.path.split("/")[2] if c.path.startswith("/v1/") else c.path for c in CASES}
    assert {"jobs", "generate", "images", "workflows", "admin"} <= paths


def test_every_malformed_request_gets_a_documented_4xx(
    live_factory: Callable[..., LiveService],
) -> None:
    svc = live_factory(auth="on")
    keys = {
        "user": svc.services.keys.create("alpha", Role.user).key,
        "admin": svc.services.keys.create("ops", Role.admin).key,
    }
    failures: list[str] = []
    with svc.client() as c:
        for req in CASES:
            r = _send(c, req, keys)
            problem = _judge(r)
            if problem:
                failures.append(f"{req.name}: {r.status_code} {problem}: {r.text[:300]}")
        assert not failures, "\n".join(failures[:40])
        # Still healthy and still serving: a good request after the whole corpus.
        assert c.get("/healthz").status_code == 200
        auth = {"authorization": f"Bearer {keys['user']}"}
        assert c.post("/v1/jobs", json=GOOD, headers=auth).status_code == 202


def _judge(r: httpx.Response) -> str | None:
    if not 400 <= r.status_code < 500:
        return "not a 4xx"
    if not r.headers.get("x-request-id"):
        return "no X-Request-ID"
    if len(r.content) > 8_000:
        return "response echoes the input"
    try:
        err = r.json()["error"]
    except (ValueError, KeyError, TypeError):
        return "not the documented error shape"
    if not isinstance(err.get("message"), str) or err.get("type") not in ERRORS:
        return "error type not in the table"
    if err["type"] != "http_error" and status_for(err["type"]) != r.status_code:
        return f"status is not the table's for {err['type']}"
    return None


@pytest.mark.parametrize("value", ['"64"', "true", "64.0"])
def test_native_api_takes_json_types_strictly(
    live_factory: Callable[..., LiveService], value: str
) -> None:
    svc = live_factory()
    body = '{"prompt": "a", "width": ' + value + ', "num_inference_steps": 2}'
    with svc.client() as c:
        r = c.post("/v1/jobs", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422
    assert r.json()["error"]["fields"][0]["field"] == "width"


def test_nan_is_refused_as_not_a_number(live_factory: Callable[..., LiveService]) -> None:
    svc = live_factory()
    body = '{"prompt": "a", "guidance_scale": NaN}'
    with svc.client() as c:
        r = c.post("/v1/jobs", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422
    problem = r.json()["error"]["fields"][0]
    assert problem["field"] == "guidance_scale"
    assert "number" in problem["message"].lower() and "less than" not in problem["message"]


def test_a_failed_synchronous_job_gets_its_error_types_status(
    live_factory: Callable[..., LiveService],
) -> None:
    """Not always a 500: the job's error type picks the status from the table."""
    svc = live_factory(sync_timeout_seconds=30)
    svc.start_workers(FakeEngine(fail_with=UnsafeWeights("refusing to load x.ckpt")))
    with svc.client() as c:
        r = c.post("/v1/generate", json=GOOD)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["type"] == "unsafe_weights"
    assert r.headers["x-request-id"]
