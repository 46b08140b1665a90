"""The SDK's retry rules, idempotency, typed errors, wait() and async parity, over real
HTTP: a scripted uvicorn server for the failure modes, a live sdserve for the rest."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sdserve.client import (
    APIConnectionError,
    AsyncClient,
    Client,
    InvalidRequestError,
    NotFoundError,
    RateLimitError,
    ServerError,
    WebhookVerificationError,
    verify_webhook,
)
from sdserve.testing import free_port
from tests.integration.live import LiveService

Factory = Callable[..., LiveService]
OK = {"images": [], "job_id": "job_1", "seeds": [], "warnings": []}


@dataclass
class Scripted:
    """A real HTTP server answering each request with the next scripted response."""

    url: str
    replies: list[Callable[[Request], Any]]
    seen: list[tuple[float, str, dict[str, str]]] = field(default_factory=list)


@pytest.fixture
def scripted() -> Iterator[Callable[[list[Callable[[Request], Any]]], Scripted]]:
    servers: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(replies: list[Callable[[Request], Any]]) -> Scripted:
        port = free_port()
        box = Scripted(f"http://127.0.0.1:{port}", list(replies))

        async def handle(request: Request) -> Response:
            box.seen.append((time.monotonic(), request.url.path, dict(request.headers)))
            reply = box.replies.pop(0)(request)
            return await reply if asyncio.iscoroutine(reply) else reply  # type: ignore[no-any-return]

        app = Starlette(routes=[Route("/{path:path}", handle, methods=["GET", "POST", "DELETE"])])
        server = uvicorn.Server(uvicorn.Config(app, port=port, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.01)
        servers.append((server, thread))
        return box

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(timeout=10)


def status(
    code: int, headers: dict[str, str] | None = None, body: Any = None
) -> Callable[..., Any]:
    return lambda _r: JSONResponse(
        body if body is not None else {"error": {"type": f"e{code}", "message": "no"}},
        status_code=code,
        headers=headers,
    )


def test_503_then_200_retries_with_one_idempotency_key(scripted: Any) -> None:
    box = scripted([status(503), status(502), status(200, body=OK)])
    sleeps: list[float] = []
    with Client(box.url, sleep=sleeps.append, backoff=0.5) as c:
        assert c.generate("x")["job_id"] == "job_1"
    keys = {h["idempotency-key"] for _, _, h in box.seen}
    assert len(box.seen) == 3 and len(keys) == 1 and None not in keys
    # Exponential with jitter: attempt n waits within [base*2^n/2, base*2^n].
    assert 0.25 <= sleeps[0] <= 0.5 and 0.5 <= sleeps[1] <= 1.0


def test_429_waits_for_retry_after(scripted: Any) -> None:
    box = scripted([status(429, {"Retry-After": "1"}), status(200, body=OK)])
    asked: list[float] = []

    def sleep(seconds: float) -> None:
        asked.append(seconds)
        time.sleep(seconds)

    with Client(box.url, sleep=sleep) as c:
        c.generate("x")
    assert asked == [1.0]
    (first, *_), (second, *_) = box.seen
    assert second - first >= 1.0  # the server saw the retry no sooner than it asked


def test_not_retried_failures_raise_typed_errors_at_once(scripted: Any) -> None:
    fields = [{"field": "width", "message": "must be a multiple of 8", "limit": 8}]
    body = {"error": {"type": "validation_error", "message": "width: bad", "fields": fields}}
    box = scripted([status(500), status(422, body=body), status(429, {"Retry-After": "3600"})])
    sleeps: list[float] = []
    with Client(box.url, sleep=sleeps.append) as c:
        with pytest.raises(ServerError) as server:
            c.generate("x")
        assert server.value.status == 500 and server.value.type == "e500"
        with pytest.raises(InvalidRequestError) as bad:
            c.generate("x")
        assert bad.value.fields[0]["field"] == "width" and bad.value.type == "validation_error"
        with pytest.raises(RateLimitError):  # asks for longer than max_retry_after
            c.generate("x")
    assert sleeps == [] and len(box.seen) == 3


def test_connect_errors_are_retried_then_raised() -> None:
    sleeps: list[float] = []
    with (
        Client(f"http://127.0.0.1:{free_port()}", retries=2, sleep=sleeps.append) as c,
        pytest.raises(APIConnectionError),
    ):
        c.job("job_1")
    assert len(sleeps) == 2


def test_async_client_has_the_same_retry_rules(scripted: Any) -> None:
    box = scripted([status(503), status(429, {"Retry-After": "1"}), status(200, body=OK)])
    asked: list[float] = []

    async def sleep(seconds: float) -> None:
        asked.append(seconds)
        await asyncio.sleep(seconds)

    async def main() -> dict[str, Any]:
        async with AsyncClient(box.url, sleep=sleep) as c:
            return await c.generate("x")

    assert asyncio.run(main())["job_id"] == "job_1"
    assert len(asked) == 2 and asked[1] == 1.0
    assert box.seen[2][0] - box.seen[1][0] >= 1.0
    assert len({h["idempotency-key"] for _, _, h in box.seen}) == 1


def test_a_retried_generate_makes_one_image(scripted: Any, live_factory: Factory) -> None:
    """The first attempt reaches sdserve but its answer is lost (a proxy answers 502):
    the retry, with the same key, waits on the same job instead of making another."""
    from sdserve.engine.fake import FakeEngine

    svc = live_factory()
    svc.start_workers(FakeEngine())

    async def forward(request: Request, lose: bool) -> Response:
        async with httpx.AsyncClient(base_url=svc.url, timeout=60) as up:
            headers = {"idempotency-key": request.headers["idempotency-key"]}
            r = await up.post("/v1/generate", content=await request.body(), headers=headers)
        if lose:
            return JSONResponse({"error": {"type": "bad_gateway"}}, status_code=502)
        return Response(r.content, status_code=r.status_code, media_type="application/json")

    box = scripted([lambda r: forward(r, True), lambda r: forward(r, False)])
    with Client(box.url, sleep=lambda _s: None) as c:
        out = c.generate("a dog", num_inference_steps=1, seed=4)
    assert len(box.seen) == 2 and out["seeds"] == [4]
    with svc.client() as direct:
        jobs = direct.get("/v1/jobs").json()["data"]
    assert [j["id"] for j in jobs] == [out["job_id"]]


def test_wait_follows_events_and_sync_async_agree(live_factory: Factory) -> None:
    from sdserve.engine.fake import FakeEngine

    svc = live_factory()
    svc.start_workers(FakeEngine(step_delay=0.01))
    views: list[dict[str, Any]] = []
    with Client(svc.url) as c:
        job = c.submit("a cat", num_inference_steps=5, seed=1)
        done = c.wait(job["id"], timeout=60, on_update=views.append)
        polled = c.wait(job["id"], stream=False)
        with pytest.raises(NotFoundError):
            c.wait("job_nope")
    assert done["status"] == "succeeded" and polled == done
    assert views[-1] == done and len(views) >= 2

    async def main() -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
        async with AsyncClient(svc.url) as a:
            ajob = await a.submit("a cat", num_inference_steps=5, seed=1)
            seen: list[dict[str, Any]] = []
            adone = await a.wait(ajob["id"], timeout=60, on_update=seen.append)
            models = await a.models()
            return adone, {"models": models}, seen

    adone, extra, seen = asyncio.run(main())
    assert adone["status"] == "succeeded" and seen[-1] == adone
    assert adone["result"]["images"][0]["seed"] == done["result"]["images"][0]["seed"]
    assert set(adone) == set(done)
    assert extra["models"][0]["id"] == extra["models"][0]["name"]


def test_wait_falls_back_to_polling(scripted: Any) -> None:
    queued = {"id": "job_1", "status": "queued"}
    finished = {"id": "job_1", "status": "succeeded"}
    box = scripted([status(501), status(200, body=queued), status(200, body=finished)])
    views: list[dict[str, Any]] = []
    with Client(box.url, sleep=lambda _s: None) as c:
        assert c.wait("job_1", on_update=views.append)["status"] == "succeeded"
    assert [p for _, p, _ in box.seen] == [
        "/v1/jobs/job_1/events",
        "/v1/jobs/job_1",
        "/v1/jobs/job_1",
    ]
    assert [v["status"] for v in views] == ["queued", "succeeded"]


def test_webhook_verifier_matches_the_server_signer() -> None:
    from sdserve.webhooks.signing import generate_secret, sign

    secret = generate_secret()
    body = b'{"id": "job_1", "event": "job.succeeded"}'
    now = time.time()
    headers = sign(secret, "msg_1", now, body)
    assert verify_webhook(secret, headers, body)["event"] == "job.succeeded"
    upper = {k.upper(): v for k, v in headers.items()}
    assert verify_webhook(secret, upper, body.decode())["id"] == "job_1"
    with pytest.raises(WebhookVerificationError):
        verify_webhook(secret, headers, body.replace(b"succeeded", b"failed"))
    with pytest.raises(WebhookVerificationError):
        verify_webhook(generate_secret(), headers, body)
    with pytest.raises(WebhookVerificationError):
        verify_webhook(secret, headers, body, now=now + 3600)


def test_client_imports_and_runs_without_torch(tmp_path: Any) -> None:
    code = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'diffusers', 'fastapi', 'transformers'):
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Block())
import sdserve.client as c
import sdserve.cli
c.Client('http://127.0.0.1:1').close()
import asyncio
asyncio.run(c.AsyncClient('http://127.0.0.1:1').close())
print('ok')
"""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr


def test_generate_command_shows_queue_position_then_steps(
    live_factory: Factory, tmp_path: Any
) -> None:
    """A real job behind another one: the CLI reports its place in the queue, then its
    steps, writes the files and prints their seeds."""
    import os

    from sdserve.engine.fake import FakeEngine

    svc = live_factory()
    svc.start_workers(FakeEngine(step_delay=0.05))
    with Client(svc.url) as c:
        ahead = c.submit("ahead", num_inference_steps=150)  # holds the one worker
    env = dict(os.environ, SDSERVE_URL=svc.url)
    cmd = [sys.executable, "-m", "sdserve", "generate", "a cat", "--seed", "5"]
    cmd += ["--num-images", "2", "--steps", "6", "--out", str(tmp_path / "imgs")]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    first = proc.stderr.readline()  # the CLI has seen its place in the queue...
    with Client(svc.url) as c:
        c.cancel(ahead["id"])  # ...so let it through
    stdout, rest = proc.communicate(timeout=120)
    run = subprocess.CompletedProcess(cmd, proc.returncode, stdout, first + rest)
    assert run.returncode == 0, run.stderr
    lines = run.stderr.splitlines()
    assert lines[0] == "queued, position 1", lines
    steps = [ln for ln in lines if "step " in ln]
    assert steps and steps[-1].endswith("step 6/6"), lines
    assert lines.index(steps[0]) > 0 and lines[-1] == "succeeded"
    printed = run.stdout.splitlines()
    assert [ln.split("\t")[1] for ln in printed] == ["seed 5", "seed 6"]
    assert all(os.path.getsize(ln.split("\t")[0]) > 0 for ln in printed)
