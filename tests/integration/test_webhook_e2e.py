"""A job submitted over HTTP with a callback_url ends in a signed, verified webhook."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from standardwebhooks import Webhook

from tests.integration.live import LiveService
from tests.integration.test_webhooks_http import Receiver, Reply, receiver  # noqa: F401

Factory = Callable[..., LiveService]


def test_job_webhook_is_signed_and_retried_after_500(
    live_factory: Factory,
    receiver: Receiver,  # noqa: F811
) -> None:
    from sdserve.engine.fake import FakeEngine

    svc = live_factory(run_dispatcher=True, webhook_allowlist=["127.0.0.1"])
    receiver.replies.append(Reply(status=500))
    svc.start_workers(FakeEngine())
    hook = receiver.url()
    with svc.client() as c:
        r = c.post("/v1/jobs", json={"prompt": "x", "num_inference_steps": 1, "callback_url": hook})
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        svc.wait_status(job_id, {"succeeded"})
    # First try answered 500; the retry comes ~5 s later (backoff with jitter).
    deadline = time.monotonic() + 30
    while len(receiver.requests) < 2:
        assert time.monotonic() < deadline, receiver.requests
        time.sleep(0.1)
    first, second = receiver.requests[:2]
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    payload = Webhook(svc.services.settings.webhook_secret).verify(second.body, second.headers)
    assert payload["id"] == job_id and payload["status"] == "succeeded"
    assert payload["event"] == "job.succeeded"
    assert json.loads(second.body)["result"]["images"][0]["url"].startswith("/v1/images/")


def test_loopback_callback_refused_without_allowlist(live_factory: Factory) -> None:
    svc = live_factory()
    with svc.client() as c:
        for url in ("http://127.0.0.1:9/x", "http://localhost:9/x", "http://[::1]:9/x"):
            r = c.post("/v1/jobs", json={"prompt": "x", "callback_url": url})
            assert r.status_code == 422, r.text
            assert r.json()["error"]["fields"][0]["field"] == "callback_url"
