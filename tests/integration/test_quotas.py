"""Quotas over real HTTP: a key gets exactly its rate, a refusal is a 429 in the error
shape with Retry-After and RateLimit-* headers, waiting as told gets through, and a
refused request is charged nothing."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx

from sdserve.security.audit import AuditQuery
from sdserve.security.keys import Role
from sdserve.security.ratelimit import QuotaPolicy
from tests.integration.live import LiveService

Factory = Callable[..., LiveService]
JOB = {"prompt": "a red square", "num_inference_steps": 2, "width": 64, "height": 64}


def _client(svc: LiveService, tenant: str = "acme") -> tuple[httpx.Client, str]:
    issued = svc.services.keys.create(tenant, Role.user)
    return svc.client(headers={"Authorization": f"Bearer {issued.key}"}), issued.record.id


def _post(c: httpx.Client, **extra: Any) -> httpx.Response:
    return c.post("/v1/jobs", json={**JOB, **extra})


def test_a_key_gets_exactly_its_rate_and_a_refusal_says_when(live_factory: Factory) -> None:
    svc = live_factory(auth="on", quota_requests="5/minute")
    c, _ = _client(svc)
    other, _ = _client(svc, "beta")
    with c, other:
        codes = [_post(c).status_code for _ in range(5)]
        assert codes == [202] * 5  # never refused below the limit
        refused = _post(c)
        assert refused.status_code == 429
        err = refused.json()["error"]
        assert err["type"] == "rate_limited" and err["limit"] == "requests"
        retry = int(refused.headers["Retry-After"])
        assert 1 <= retry <= 60 and err["retry_after"] == retry
        assert refused.headers["RateLimit-Limit"] == "5"
        assert refused.headers["RateLimit-Remaining"] == "0"
        assert refused.headers["RateLimit-Reset"] == str(retry)
        assert _post(c).status_code == 429  # still refused; and not more than 5 admitted
        assert len(svc.services.queue.list_jobs(_owner_filter("acme")).jobs) == 5
        assert _post(other).status_code == 202  # another key has its own count


def _owner_filter(owner: str) -> Any:
    from sdserve.queue.base import ListFilter

    return ListFilter(owner=owner, limit=100)


def test_a_client_that_waits_as_told_gets_through(live_factory: Factory) -> None:
    svc = live_factory(auth="on", quota_requests="2/second")
    c, _ = _client(svc)
    with c:
        for _ in range(3):  # a window may roll over mid-way: then more than 2 pass
            codes = [_post(c).status_code for _ in range(3)]
            if codes[-1] == 429:
                break
        refused = _post(c)
        assert refused.status_code == 429
        time.sleep(int(refused.headers["Retry-After"]))
        assert _post(c).status_code == 202


def test_images_per_day_refuses_without_charging_requests(live_factory: Factory) -> None:
    svc = live_factory(auth="on", quota_requests="3/minute", quota_images="4/day")
    c, key_id = _client(svc)
    with c:
        assert _post(c, num_images=3).status_code == 202
        refused = _post(c, num_images=2)  # 3 + 2 > 4
        assert refused.status_code == 429
        assert refused.json()["error"]["limit"] == "images"
        assert refused.headers["RateLimit-Remaining"] == "1"
        # Neither the refused request nor its images were charged: one image and two
        # requests are left.
        assert _post(c, num_images=1).status_code == 202
        assert _post(c, num_images=1).json()["error"]["limit"] == "images"
        too_many = _post(c, num_images=5)
        assert too_many.status_code == 422
        assert too_many.json()["error"]["fields"][0]["field"] == "num_images"
        # A per-key override lifts this key alone.
        settings = svc.services.settings.model_copy(
            update={"quota_overrides": {f"key:{key_id}": {"images": "100/day"}}}
        )
        svc.services.quota_policy = QuotaPolicy.from_settings(settings)
        assert _post(c, num_images=5).status_code == 202


def test_invalid_request_and_idempotent_replay_are_not_charged(live_factory: Factory) -> None:
    svc = live_factory(auth="on", quota_requests="2/minute")
    c, _ = _client(svc)
    with c:
        for _ in range(3):
            assert _post(c, width=3).status_code == 422
        hdr = {"Idempotency-Key": "k1"}
        first = c.post("/v1/jobs", json=JOB, headers=hdr)
        assert first.status_code == 202
        for _ in range(3):
            assert c.post("/v1/jobs", json=JOB, headers=hdr).json()["id"] == first.json()["id"]
        assert _post(c).status_code == 202
        assert _post(c).status_code == 429


def test_bounds_and_jobs_in_flight_with_overrides(live_factory: Factory) -> None:
    svc = live_factory(
        auth="on",
        quota_max_queued=2,
        quota_max_steps=4,
        quota_max_pixels=64 * 64,
        quota_overrides={"tenant:big": {"max_queued": 3, "max_steps": 0}},
    )
    c, _ = _client(svc)
    big, _ = _client(svc, "big")
    with c, big:
        steps = _post(c, num_inference_steps=5)
        assert steps.status_code == 422
        assert steps.json()["error"]["fields"][0] == {
            "field": "num_inference_steps",
            "message": "5 steps exceeds this key's quota of 4",
            "limit": 4,
        }
        pixels = _post(c, width=128)
        assert pixels.status_code == 422 and pixels.json()["error"]["fields"][0]["limit"] == 4096
        assert [_post(c).status_code for _ in range(2)] == [202, 202]
        queued = _post(c)
        assert queued.status_code == 429
        assert queued.json()["error"]["limit"] == "max_queued"
        assert queued.headers["Retry-After"] == "5"
        # The tenant override: three at once and no step bound.
        codes = [_post(big, num_inference_steps=8).status_code for _ in range(4)]
        assert codes == [202, 202, 202, 429]
        # A job that ends frees its slot.
        job_id = c.get("/v1/jobs").json()["data"][0]["id"]
        assert c.delete(f"/v1/jobs/{job_id}").status_code == 200
        assert _post(c).status_code == 202


def test_workflows_share_the_quota(live_factory: Factory) -> None:
    svc = live_factory(
        auth="on", quota_requests="2/minute", quota_images="4/day", quota_max_steps=3
    )
    c, _ = _client(svc)
    steps = [
        {"prompt": "an empty room", "num_inference_steps": 2},
        {
            "task": "img2img",
            "prompt": "brighter",
            "strength": 0.5,
            "num_inference_steps": 3,
            "num_images": 2,
        },
    ]
    with c:
        deep = c.post(
            "/v1/workflows", json={"steps": [steps[0], {**steps[1], "num_inference_steps": 4}]}
        )
        assert deep.status_code == 422
        assert deep.json()["error"]["fields"][0]["field"] == "steps.1.num_inference_steps"
        assert c.post("/v1/workflows", json={"steps": steps}).status_code == 202  # 3 images
        refused = c.post("/v1/workflows", json={"steps": steps})
        assert refused.status_code == 429 and refused.json()["error"]["limit"] == "images"
        assert _post(c).status_code == 202  # 1 image and 1 request were left
        assert _post(c).json()["error"]["limit"] == "requests"
    actions = [e.action for e in svc.services.audit.query(AuditQuery())]
    assert actions == ["workflow.create", "job.create"]
