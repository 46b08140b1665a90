"""Workflows over real HTTP: steps chained through their outputs, one id and one
progress, cancel mid-step, a failing step named, bad workflows refused up front."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from sdserve.domain.errors import UnsafeWeights
from sdserve.engine.base import BatchOutput, BatchRequest, StepCallback
from sdserve.engine.fake import FakeEngine
from tests.integration.live import LiveService
from tests.integration.test_api_editing import b64, mask_png, png

Factory = Callable[..., LiveService]

THREE_STEPS: list[dict[str, Any]] = [
    {"prompt": "an empty room", "seed": 11, "num_inference_steps": 3},
    {"task": "img2img", "prompt": "a brighter room", "strength": 0.5, "num_inference_steps": 4},
    {"task": "inpaint", "prompt": "a yellow square", "mask": b64(mask_png()), "num_images": 2},
]


def wait_workflow(svc: LiveService, wf_id: str, statuses: set[str]) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    with svc.client() as c:
        while True:
            view: dict[str, Any] = c.get(f"/v1/workflows/{wf_id}").json()
            if view["status"] in statuses:
                return view
            assert time.monotonic() < deadline, view
            time.sleep(0.02)


@pytest.fixture
def svc(live_factory: Factory) -> LiveService:
    live = live_factory()
    live.start_workers(FakeEngine())
    return live


def test_workflow_chains_steps_and_records_each(svc: LiveService) -> None:
    with svc.client() as c:
        r = c.post("/v1/workflows", json={"steps": THREE_STEPS, "priority": "high"})
        assert r.status_code == 202, r.text
        assert r.headers["location"] == f"/v1/workflows/{r.json()['id']}"
    view = wait_workflow(svc, r.json()["id"], {"succeeded", "failed"})
    assert view["status"] == "succeeded" and view["priority"] == "high"
    assert view["progress"]["step"] == 3 and view["progress"]["steps"] == 3
    s0, s1, s2 = view["steps"]
    assert [s["task"] for s in view["steps"]] == ["txt2img", "img2img", "inpaint"]
    assert all(s["status"] == "succeeded" for s in view["steps"])
    # each step consumed the previous step's first image; parameters are complete
    assert s1["parameters"]["image"] == s0["result"]["images"][0]["id"]
    assert s2["parameters"]["image"] == s1["result"]["images"][0]["id"]
    assert s1["parameters"]["steps_run"] == 2 and s2["parameters"]["mask"] is not None
    assert all(s["parameters"]["priority"] == "high" for s in view["steps"])
    assert len(view["result"]["images"]) == 2  # the last step's images
    with svc.client() as c:
        step_job = c.get(f"/v1/jobs/{s1['job_id']}").json()
    assert step_job["workflow"] == {"id": view["id"], "step": 1}


def test_workflow_from_an_original_image_multipart(svc: LiveService) -> None:
    steps = [
        {"task": "img2img", "prompt": "a room", "num_inference_steps": 4},
        {"task": "inpaint", "prompt": "a lamp", "num_inference_steps": 4},
    ]
    files = {
        "image": ("room.png", png((80, 64)), "image/png"),
        "mask_1": ("m.png", mask_png((80, 64)), "image/png"),
    }
    with svc.client() as c:
        r = c.post("/v1/workflows", data={"steps": json.dumps(steps)}, files=files)
    assert r.status_code == 202, r.text
    view = wait_workflow(svc, r.json()["id"], {"succeeded", "failed"})
    assert view["status"] == "succeeded", view
    first, second = view["steps"]
    assert first["input"] == "original" and second["input"] == "previous"
    assert (first["parameters"]["width"], first["parameters"]["height"]) == (80, 64)


def test_cancel_mid_step_skips_the_rest(live_factory: Factory) -> None:
    svc = live_factory()
    svc.start_workers(FakeEngine(step_delay=0.05))
    steps = [{"prompt": "a", "num_inference_steps": 100}, *THREE_STEPS[1:]]
    with svc.client() as c:
        wf_id = c.post("/v1/workflows", json={"steps": steps}).json()["id"]
        deadline = time.monotonic() + 30
        while c.get(f"/v1/workflows/{wf_id}").json()["progress"]["denoising"]["step"] < 2:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        r = c.delete(f"/v1/workflows/{wf_id}")
        assert r.status_code == 200 and r.json()["status"] == "canceled"
        first_job = r.json()["steps"][0]["job_id"]
        svc.wait_status(first_job, {"canceled"})
        time.sleep(0.2)
        view = c.get(f"/v1/workflows/{wf_id}").json()
    assert view["status"] == "canceled"
    assert [s["status"] for s in view["steps"]] == ["canceled", "pending", "pending"]


class _RefusesImg2Img(FakeEngine):
    def generate(self, request: BatchRequest, on_step: StepCallback) -> BatchOutput:
        if request.task == "img2img":
            raise UnsafeWeights("this engine refuses img2img")
        return super().generate(request, on_step)


def test_a_failing_step_fails_the_workflow_and_names_it(live_factory: Factory) -> None:
    svc = live_factory()
    svc.start_workers(_RefusesImg2Img())
    with svc.client() as c:
        wf_id = c.post("/v1/workflows", json={"steps": THREE_STEPS}).json()["id"]
    view = wait_workflow(svc, wf_id, {"failed", "succeeded"})
    assert view["status"] == "failed"
    assert view["error"]["step"] == 1 and view["error"]["type"] == "unsafe_weights"
    assert "step 1 (img2img)" in view["error"]["message"]
    assert [s["status"] for s in view["steps"]] == ["succeeded", "failed", "pending"]


BAD: list[tuple[str, dict[str, Any], str]] = [
    ("no steps", {"steps": []}, "steps"),
    (
        "first step has no previous",
        {"steps": [{"task": "img2img", "prompt": "x", "input": "previous"}]},
        "steps.0.input",
    ),
    (
        "editing first step without an image",
        {"steps": [{"task": "img2img", "prompt": "x"}]},
        "steps.0.input",
    ),
    (
        "intermediate step makes 2 images",
        {"steps": [{"prompt": "x", "num_images": 2}, {"task": "img2img", "prompt": "y"}]},
        "steps.0.num_images",
    ),
    ("priority per step", {"steps": [{"prompt": "x", "priority": "high"}]}, "steps.0.priority"),
    (
        "mask does not fit the previous output",
        {
            "steps": [
                {"prompt": "x"},
                {"task": "inpaint", "prompt": "y", "mask": b64(mask_png((32, 32)))},
            ]
        },
        "steps.1.mask",
    ),
    ("input on txt2img", {"steps": [{"prompt": "x", "input": "original"}]}, "steps.0.input"),
    (
        "bad parameter in a later step",
        {"steps": [{"prompt": "x"}, {"task": "img2img", "prompt": "y", "strength": 2}]},
        "steps.1.strength",
    ),
]


@pytest.mark.parametrize(("name", "body", "field"), BAD, ids=[b[0] for b in BAD])
def test_bad_workflows_are_refused_before_any_step_runs(
    svc: LiveService, name: str, body: dict[str, Any], field: str
) -> None:
    with svc.client() as c:
        r = c.post("/v1/workflows", json=body)
        assert r.status_code == 422, (name, r.text)
        assert field in [f["field"] for f in r.json()["error"]["fields"]], r.json()
        assert c.get("/v1/jobs").json()["data"] == []  # nothing was queued


def test_workflow_idempotency_and_missing(svc: LiveService) -> None:
    with svc.client() as c:
        h = {"Idempotency-Key": "wf-1"}
        one = c.post("/v1/workflows", json={"steps": THREE_STEPS[:1]}, headers=h)
        two = c.post("/v1/workflows", json={"steps": THREE_STEPS[:1]}, headers=h)
        assert one.json()["id"] == two.json()["id"]
        assert two.headers["idempotent-replayed"] == "true"
        assert c.get("/v1/workflows/wf_nope").status_code == 404
        assert c.delete("/v1/workflows/wf_nope").status_code == 404


def test_workflow_events_stream_until_done(svc: LiveService) -> None:
    with svc.client() as c:
        wf_id = c.post("/v1/workflows", json={"steps": THREE_STEPS}).json()["id"]
        statuses = []
        with c.stream("GET", f"/v1/workflows/{wf_id}/events") as r:
            for line in r.iter_lines():
                if line.startswith("data: "):
                    statuses.append(json.loads(line[6:])["status"])
    assert statuses[-1] == "succeeded"
