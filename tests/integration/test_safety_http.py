"""Content safety end to end over real HTTP (uvicorn + in-process workers).

The prompt gate on every route and task, per-tenant thresholds, fail-closed external
moderation at submit, image checks in the worker (the checkpoint's own tiny checker
through the real loading path, a deterministic colour checker, a failing one), the
quarantine (no flagged image reachable by id, list, sync response or webhook), review
and appeal with who and when, and the decision counters.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from sdserve.client import Client
from sdserve.domain.jobs import image_id
from sdserve.domain.requests import OutputFormat, image_seeds
from sdserve.engine.fake import FakeEngine, fake_image
from sdserve.safety.images import ColourRangeChecker, FailingChecker
from sdserve.safety.service import safety_of
from sdserve.security.keys import Role
from tests.integration.live import LiveService
from tests.integration.test_api_editing import b64, png
from tests.integration.test_moderation_http import Server, server  # noqa: F401
from tests.integration.test_webhooks_http import Receiver, receiver  # noqa: F401

Factory = Callable[..., LiveService]
BLOCKED = "a man beheading a prisoner"  # violence 0.95
WEAK = "a dead body"  # violence ~0.6: under 0.7, over a stricter tenant's 0.5
SIZE = {"width": 64, "height": 64, "num_inference_steps": 2}


def job_body(prompt: str, seed: int = 7, **extra: Any) -> dict[str, Any]:
    return {"prompt": prompt, "seed": seed, **SIZE, **extra}


def checker_flagging(prompt: str, seed: int, category: str = "adult") -> ColourRangeChecker:
    """Flags exactly the image the fake engine draws for (prompt, seed)."""
    r, g, b = ColourRangeChecker((0, 0, 0), (0, 0, 0)).mean(fake_image(prompt, "", seed, 64, 64))
    return ColourRangeChecker(
        (r - 0.01, g - 0.01, b - 0.01), (r + 0.01, g + 0.01, b + 0.01), category
    )


def assert_refused(r: httpx.Response) -> dict[str, Any]:
    assert r.status_code == 400, r.text
    err: dict[str, Any] = r.json()["error"]
    assert err["type"] == "content_policy_violation"
    assert err["approved"] is False and err["confidence"] >= 0.7
    assert err["categories"]["violence"] >= 0.7 and "violence" in err["reason"]
    assert err["decision_id"].startswith("sfd_")
    assert "matches" not in err  # never teaches how to word around the list
    return err


def test_prompt_refused_on_every_route_and_task(live_factory: Factory) -> None:
    svc = live_factory()
    with svc.client() as c:
        refusals = [
            c.post("/v1/generate", json=job_body(BLOCKED)),
            c.post("/v1/jobs", json=job_body(BLOCKED)),
            c.post(
                "/v1/jobs",
                json=job_body("a calm lake", negative_prompt="x")
                | {"prompt": f"a calm lake, {BLOCKED}"},
            ),
            c.post(
                "/v1/jobs",
                json=job_body(BLOCKED, task="img2img", image=b64(png()), strength=0.5),
            ),
            c.post(
                "/v1/jobs",
                data={"task": "img2img", "prompt": BLOCKED, "num_inference_steps": "4"},
                files={"image": ("in.png", png(), "image/png")},
            ),
            c.post(
                "/v1/workflows",
                json={"steps": [job_body("an empty room"), job_body(BLOCKED, task="img2img")]},
            ),
            # Obfuscated: homoglyphs and spacing do not get through.
            c.post("/v1/jobs", json=job_body("a man b e h e a d i n g a pris\u043ener")),
        ]
        errs = [assert_refused(r) for r in refusals]
        assert c.get("/v1/jobs").json()["data"] == []  # nothing was queued
        ok = c.post("/v1/jobs", json=job_body("shoot a portrait of a woman, bloody mary cocktail"))
        assert ok.status_code == 202, ok.text
        records = c.get("/v1/admin/safety/records", params={"kind": "prompt"}).json()["data"]
        metrics = c.get("/metrics").text
    assert {r["id"] for r in records} == {e["decision_id"] for e in errs}
    for rec in records:  # retention: the prompt itself is not kept by default
        assert "prompt" not in rec and len(rec["prompt_sha256"]) == 64
        assert rec["outcome"] == "refused" and rec["actor"] == "policy:builtin"
    line = 'sdserve_safety_decisions_total{category="violence",outcome="refused",stage="prompt"}'
    assert f"{line} {float(len(errs))}" in metrics
    # the workflow's first step, then the benign prompt
    assert 'outcome="approved",stage="prompt"} 2.0' in metrics


def test_record_keeps_prompt_text_only_when_configured(live_factory: Factory) -> None:
    svc = live_factory(safety_record_prompts=True)
    with svc.client() as c:
        assert_refused(c.post("/v1/jobs", json=job_body(BLOCKED)))
        (rec,) = c.get("/v1/admin/safety/records").json()["data"]
    assert rec["prompt"] == BLOCKED


def test_tenant_threshold(live_factory: Factory) -> None:
    svc = live_factory(auth="on", queue_backend="sqlite")
    keys = svc.services.keys
    admin = keys.create("ops", Role.admin).key
    strict = keys.create("kids", Role.user).key
    lenient = keys.create("kids", Role.user, name="lenient")
    plain = keys.create("acme", Role.user).key
    with svc.client(headers={"X-API-Key": admin}) as c:
        r = c.put("/v1/admin/safety/tenants/kids", json={"prompt_threshold": 0.5})
        assert r.status_code == 200 and r.json()["prompt_threshold"] == 0.5
        bad = c.put("/v1/admin/safety/tenants/kids", json={"prompt_threshold": 1.5})
        assert bad.status_code == 422 and "prompt_threshold" in bad.text
        assert keys.tenant("kids") is not None  # other settings kept beside it
    with svc.client(headers={"X-API-Key": strict}) as c:
        err = c.post("/v1/jobs", json=job_body(WEAK)).json()["error"]
        assert err["type"] == "content_policy_violation" and "0.50" in err["reason"]
        assert c.get("/v1/admin/safety/held").status_code == 403  # admins only
        refusal = err["decision_id"]
    with svc.client(headers={"X-API-Key": plain}) as c:  # another tenant's refusal: none
        other = c.post("/v1/safety/appeals", json={"subject": refusal, "note": "mine?"})
        assert other.status_code == 404
    with svc.client(headers={"X-API-Key": strict}) as c:
        r = c.post("/v1/safety/appeals", json={"subject": refusal, "note": "a crime novel"})
        assert r.status_code == 201 and r.json()["actor"].startswith("key:")
    with svc.client(headers={"X-API-Key": plain}) as c:
        assert c.post("/v1/jobs", json=job_body(WEAK)).status_code == 202
    with svc.client(headers={"X-API-Key": admin}) as c:  # a key's own beats its tenant's
        r = c.put(f"/v1/admin/safety/keys/{lenient.record.id}", json={"prompt_threshold": 0.9})
        assert r.status_code == 200 and r.json()["prompt_threshold"] == 0.9
        assert (
            c.put("/v1/admin/safety/keys/key_nope", json={"prompt_threshold": 0.9}).status_code
            == 404
        )
    with svc.client(headers={"X-API-Key": lenient.key}) as c:
        assert c.post("/v1/jobs", json=job_body(WEAK)).status_code == 202
        assert_refused(c.post("/v1/jobs", json=job_body(BLOCKED)))
    with svc.client(headers={"X-API-Key": admin}) as c:
        c.put("/v1/admin/safety/tenants/kids", json={"prompt_threshold": None})
    with svc.client(headers={"X-API-Key": strict}) as c:
        assert c.post("/v1/jobs", json=job_body(WEAK)).status_code == 202


@pytest.mark.parametrize("path", ["/error500", "/garbage", "/slow"])
def test_external_moderation_fails_closed_at_submit(
    live_factory: Factory,
    server: Server,  # noqa: F811
    path: str,
) -> None:
    svc = live_factory(
        prompt_policy="external", moderation_url=server.url + path, moderation_timeout_seconds=0.3
    )
    with svc.client() as c:
        r = c.post("/v1/jobs", json=job_body("a calm lake"))
        assert r.status_code == 503, r.text
        assert r.json()["error"]["type"] == "moderation_unavailable"
        assert c.get("/v1/jobs").json()["data"] == []
        (rec,) = c.get("/v1/admin/safety/records").json()["data"]
    assert rec["outcome"] == "error" and rec["actor"] == "policy:external"


def test_external_moderation_refuses_and_approves(
    live_factory: Factory,
    server: Server,  # noqa: F811
) -> None:
    svc = live_factory(prompt_policy="external", moderation_url=server.url + "/flagged")
    with svc.client() as c:
        assert_refused(c.post("/v1/jobs", json=job_body("a calm lake")))
    svc = live_factory(prompt_policy="external", moderation_url=server.url + "/clean")
    with svc.client() as c:
        assert c.post("/v1/jobs", json=job_body("a calm lake")).status_code == 202


# --- images ---


def _ids(svc: LiveService, job_id: str, n: int) -> list[str]:
    key = svc.services.server_key.image_key
    return [image_id(job_id, i, OutputFormat.png, key) for i in range(n)]


def _unreachable(svc: LiveService, c: httpx.Client, job_id: str, n: int) -> None:
    """No image of the job under its id, in the blob store or over HTTP."""
    for ident in _ids(svc, job_id, n):
        assert c.get(f"/v1/images/{ident}").status_code == 404
        assert svc.services.blobs.get(ident) is None


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
def test_held_images_quarantined_then_approved_or_rejected_and_appealed(
    live_factory: Factory,
    receiver: Receiver,  # noqa: F811
    backend: str,
) -> None:
    svc = live_factory(
        run_dispatcher=True,
        webhook_allowlist=["127.0.0.1"],
        safety_review="hold",
        queue_backend=backend,
    )
    svc.start_workers(FakeEngine(), checker=checker_flagging("a red bucket", 5))
    hook = f"http://127.0.0.1:{receiver.port}/hook"
    with svc.client() as c:
        held_ids = []
        for _ in range(2):
            r = c.post("/v1/jobs", json=job_body("a red bucket", seed=5, callback_url=hook))
            held_ids.append(r.json()["id"])
        clean = c.post("/v1/jobs", json=job_body("a red bucket", seed=6)).json()["id"]
        assert svc.wait_status(clean, {"succeeded"})["result"]["images"][0]["withheld"] is False
        for job_id in held_ids:
            view = svc.wait_status(job_id, {"held"})
            (im,) = view["result"]["images"]
            assert im == {
                "id": None,
                "url": None,
                "seed": 5,
                "withheld": True,
                "reason": im["reason"],
                "expired": False,
            }
            assert "mean colour" in im["reason"] and view["error"]["type"] == "held_for_review"
            _unreachable(svc, c, job_id, 1)
            quarantine = safety_of(svc.services).quarantine
            sealed = svc.services.blobs.get(quarantine.hidden_id(_ids(svc, job_id, 1)[0]))
            assert sealed is not None and not sealed.startswith(b"\x89PNG")  # encrypted
        # The sync route says held, and sends no image.
        sync = c.post("/v1/generate", json=job_body("a red bucket", seed=5))
        assert sync.status_code == 409 and sync.json()["error"]["type"] == "held_for_review"
        listed = c.get("/v1/jobs", params={"status": "held"}).json()["data"]
        assert {j["id"] for j in listed} >= set(held_ids)
        assert all(im["url"] is None for j in listed for im in j["result"]["images"])
        held = c.get("/v1/admin/safety/held").json()["data"]
        assert {j["id"] for j in held} >= set(held_ids)

        first, second = held_ids
        r = c.post(f"/v1/admin/safety/jobs/{first}/approve", json={"note": "a bucket"})
        assert r.status_code == 200, r.text
        assert r.json()["job"]["status"] == "succeeded"
        (im,) = c.get(f"/v1/jobs/{first}").json()["result"]["images"]
        assert im["withheld"] is False
        got = c.get(f"/v1/images/{im['id']}")
        assert got.status_code == 200 and got.content.startswith(b"\x89PNG")
        assert c.post(f"/v1/admin/safety/jobs/{first}/approve").status_code == 409

        r = c.post(f"/v1/admin/safety/jobs/{second}/reject", json={"note": "no"})
        assert r.status_code == 200 and r.json()["job"]["status"] == "failed"
        assert r.json()["job"]["error"]["type"] == "content_policy_violation"
        _unreachable(svc, c, second, 1)
        hidden = safety_of(svc.services).quarantine.hidden_id(_ids(svc, second, 1)[0])
        assert svc.services.blobs.get(hidden) is None  # deleted

        # Appeal: once, with a note; an admin decides; all recorded.
        assert c.post("/v1/safety/appeals", json={"subject": second, "note": ""}).status_code == 422
        appeal = c.post("/v1/safety/appeals", json={"subject": second, "note": "it is paint"})
        assert appeal.status_code == 201, appeal.text
        assert appeal.json()["status"] == "pending"
        again = c.post("/v1/safety/appeals", json={"subject": second, "note": "please"})
        assert again.status_code == 409
        not_refused = c.post("/v1/safety/appeals", json={"subject": clean, "note": "x"})
        assert not_refused.status_code == 422
        pending = c.get("/v1/admin/safety/appeals", params={"status": "pending"}).json()["data"]
        assert [a["id"] for a in pending] == [appeal.json()["id"]]
        decided = c.post(
            f"/v1/admin/safety/appeals/{appeal.json()['id']}",
            json={"decision": "denied", "note": "policy"},
        )
        assert decided.status_code == 200 and decided.json()["status"] == "denied"
        assert (
            c.post(
                f"/v1/admin/safety/appeals/{appeal.json()['id']}", json={"decision": "granted"}
            ).status_code
            == 409
        )
        mine = c.get(f"/v1/safety/appeals/{appeal.json()['id']}").json()
        assert mine["decision"]["note"] == "policy" and mine["decision"]["actor"] == "open"
        records = c.get("/v1/admin/safety/records").json()["data"]
        metrics = c.get("/metrics").text
    kinds = [(r["kind"], r["outcome"], r["subject"]) for r in records]
    assert ("review", "approved", first) in kinds and ("review", "rejected", second) in kinds
    assert ("image", "held", first) in kinds and ("appeal", "pending", second) in kinds
    assert all(r["at"] > 0 and r["actor"] for r in records)
    assert (
        'sdserve_safety_decisions_total{category="adult",outcome="flagged",stage="image"}'
        in metrics
    )

    # Webhooks: held (no image link), then the decision; never a link before approval.
    deadline = time.monotonic() + 60
    while len(receiver.requests) < 4:
        assert time.monotonic() < deadline, receiver.requests
        time.sleep(0.05)
    events = [json.loads(r.body) for r in receiver.requests]
    by_job: dict[str, list[str]] = {}
    for e in events:
        by_job.setdefault(e["data"]["id"] if "data" in e else e["id"], []).append(
            e.get("event") or e.get("type", "")
        )
        body = e.get("data", e)
        if body["status"] == "held" or body["status"] == "failed":
            assert all(im["url"] is None for im in body["result"]["images"])
    # The dispatcher delivers concurrently: one of each, in whatever order they land.
    assert sorted(by_job[first]) == ["job.held", "job.succeeded"]
    assert sorted(by_job[second]) == ["job.failed", "job.held"]


def test_reject_mode_withholds_only_flagged_images(live_factory: Factory) -> None:
    svc = live_factory(safety_review="reject")
    seeds = image_seeds(3, 2)
    svc.start_workers(FakeEngine(), checker=checker_flagging("a lamp", seeds[1]))
    with svc.client() as c:
        r = c.post("/v1/generate", json=job_body("a lamp", seed=3, num_images=2))
        assert r.status_code == 200, r.text
        body = r.json()
        assert len(body["images"]) == 1 and body["seeds"] == [seeds[0]]
        view = c.get(f"/v1/jobs/{body['job_id']}").json()
        shown, withheld = view["result"]["images"]
        assert shown["withheld"] is False and withheld["withheld"] is True
        assert withheld["url"] is None and "withheld" in view["result"]["warnings"][-1]
        kept, flagged = _ids(svc, body["job_id"], 2)
        assert c.get(f"/v1/images/{kept}").status_code == 200
        assert c.get(f"/v1/images/{flagged}").status_code == 404
        # Every image flagged: the job fails; nothing stored.
        only = c.post("/v1/jobs", json=job_body("a lamp", seed=seeds[1])).json()["id"]
        failed = svc.wait_status(only, {"failed"})
        assert failed["error"]["type"] == "content_policy_violation"
        _unreachable(svc, c, only, 1)


def test_checker_error_fails_closed(live_factory: Factory) -> None:
    svc = live_factory(max_attempts=1)
    svc.start_workers(FakeEngine(), checker=FailingChecker("detector crashed"))
    with svc.client() as c:
        job_id = c.post("/v1/jobs", json=job_body("a calm lake")).json()["id"]
        view = svc.wait_status(job_id, {"failed"})
        assert view["error"]["type"] == "image_check_failed"
        assert "detector crashed" in view["error"]["message"] and view["result"] is None
        _unreachable(svc, c, job_id, 1)
        hidden = safety_of(svc.services).quarantine.hidden_id(_ids(svc, job_id, 1)[0])
        assert svc.services.blobs.get(hidden) is None
        metrics = c.get("/metrics").text
    assert (
        'sdserve_safety_decisions_total{category="none",outcome="error",stage="image"} 1.0'
        in metrics
    )


def test_checkpoint_safety_checker_through_the_real_loading_path(
    live_factory: Factory, tiny_model_dir: Path, tmp_path: Path
) -> None:
    """SDSERVE_IMAGE_CHECKER=model: the model folder's own (tiny, random) safety_checker,
    written by the project, loaded by path; it flags the image it was made to flag."""
    from sdserve.engine.safety_checker import write_tiny_safety_checker

    model = tmp_path / "tiny-checked"
    shutil.copytree(tiny_model_dir, model)
    marked = fake_image("a red bucket", "", 5, 64, 64)
    write_tiny_safety_checker(model, flag_like=[marked])
    svc = live_factory(model=str(model), image_checker="model", safety_review="hold")
    svc.start_workers(FakeEngine())
    with svc.client() as c:
        flagged = c.post("/v1/jobs", json=job_body("a red bucket", seed=5)).json()["id"]
        clean = c.post("/v1/jobs", json=job_body("a calm lake", seed=9)).json()["id"]
        held = svc.wait_status(flagged, {"held"})
        assert "safety checker" in held["result"]["images"][0]["reason"]
        assert svc.wait_status(clean, {"succeeded"})["result"]["images"][0]["withheld"] is False
        _unreachable(svc, c, flagged, 1)


def test_events_stream_shows_held_then_the_decision(live_factory: Factory) -> None:
    svc = live_factory()
    svc.start_workers(FakeEngine(), checker=checker_flagging("a red bucket", 5))
    with svc.client() as c:
        job_id = c.post("/v1/jobs", json=job_body("a red bucket", seed=5)).json()["id"]
        svc.wait_status(job_id, {"held"})
        with Client(svc.url) as client:  # the client's wait stops at held, too
            assert client.wait(job_id, timeout=5, poll=0.05)["status"] == "held"
        seen: list[str] = []
        with c.stream("GET", f"/v1/jobs/{job_id}/events") as events:
            for line in events.iter_lines():
                if not line.startswith("data: "):
                    continue
                seen.append(json.loads(line[6:])["status"])
                if seen == ["held"]:  # the stream stays open while a person decides
                    r = c.post(f"/v1/admin/safety/jobs/{job_id}/approve")
                    assert r.status_code == 200, r.text
        assert seen == ["held", "succeeded"]  # and ends after the terminal state


def test_workflow_waits_on_a_held_step_and_goes_on_after_approval(live_factory: Factory) -> None:
    svc = live_factory()
    svc.start_workers(FakeEngine(), checker=checker_flagging("an empty room", 11))
    steps = [job_body("an empty room", seed=11), job_body("a brighter room", task="img2img")]
    with svc.client() as c:
        wf = c.post("/v1/workflows", json={"steps": steps}).json()
        first = wf["steps"][0]["job_id"]
        svc.wait_status(first, {"held"})
        view = c.get(f"/v1/workflows/{wf['id']}").json()
        assert view["status"] == "running" and view["steps"][1]["job_id"] is None
        assert c.post(f"/v1/admin/safety/jobs/{first}/approve").status_code == 200
        deadline = time.monotonic() + 60
        while (view := c.get(f"/v1/workflows/{wf['id']}").json())["status"] == "running":
            assert time.monotonic() < deadline, view
            time.sleep(0.05)
    assert view["status"] == "succeeded", view


def test_review_over_redis(live_factory: Factory, redis_url: str, redis_prefix: str) -> None:
    """The Redis deployment: held in the Redis job store, record in Redis."""
    svc = live_factory(queue_backend="redis", redis_url=redis_url, redis_prefix=redis_prefix)
    svc.start_workers(FakeEngine(), checker=checker_flagging("a red bucket", 5))
    with svc.client() as c:
        assert_refused(c.post("/v1/jobs", json=job_body(BLOCKED)))
        job_id = c.post("/v1/jobs", json=job_body("a red bucket", seed=5)).json()["id"]
        svc.wait_status(job_id, {"held"})
        assert [j["id"] for j in c.get("/v1/admin/safety/held").json()["data"]] == [job_id]
        r = c.post(f"/v1/admin/safety/jobs/{job_id}/reject", json={"note": "no"})
        assert r.json()["job"]["status"] == "failed"
        _unreachable(svc, c, job_id, 1)
        kinds = [x["kind"] for x in c.get("/v1/admin/safety/records").json()["data"]]
    assert kinds == ["review", "image", "prompt"]
