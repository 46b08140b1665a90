"""Webhooks of a multi-tenant service, end to end over real HTTP: each tenant's signed
with its own secret (or the deployment's), links absolute from the public base URL,
and the receiver's token in its URL never stored in clear."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from sdserve.engine.fake import FakeEngine
from sdserve.security.keys import Role
from tests.integration.live import LiveService
from tests.integration.test_webhooks_http import Receiver, receiver  # noqa: F401

Factory = Callable[..., LiveService]
BASE = "https://api.example.test"
TINY = {"prompt": "a red circle", "num_inference_steps": 1}


def _wait(receiver: Receiver, count: int) -> None:  # noqa: F811
    deadline = time.monotonic() + 60
    while len(receiver.requests) < count:
        assert time.monotonic() < deadline, receiver.requests
        time.sleep(0.05)


def test_each_tenant_signs_with_its_own_secret(
    live_factory: Factory,
    receiver: Receiver,  # noqa: F811
) -> None:
    svc = live_factory(
        run_dispatcher=True,
        webhook_allowlist=["127.0.0.1"],
        auth="on",
        queue_backend="sqlite",
        public_base_url=BASE,
    )
    svc.start_workers(FakeEngine())
    keys = svc.services.keys
    admin = keys.create("ops", Role.admin).key
    acme = keys.create("acme", Role.user).key
    beta = keys.create("beta", Role.user).key
    with svc.client(headers={"X-API-Key": admin}) as c:
        r = c.put("/v1/admin/tenants/acme/webhook-secret", json={})
        assert r.status_code == 200, r.text
        acme_secret = r.json()["webhook_secret"]
        tenants = {t["name"]: t for t in c.get("/v1/admin/tenants").json()["data"]}
        assert tenants["acme"]["webhook_secret"] is True  # that it has one, never the value
        assert tenants["beta"]["webhook_secret"] is False
        bad = c.put("/v1/admin/tenants/acme/webhook-secret", json={"secret": "nope"})
        assert bad.status_code == 422 and bad.json()["error"]["fields"][0]["field"] == "secret"
    default_secret = svc.services.webhook_secret
    token = "tok_" + uuid.uuid4().hex
    hook = receiver.url(path=f"/hook?token={token}")
    sent: dict[str, str] = {}
    for tenant, key in (("acme", acme), ("beta", beta)):
        with svc.client(headers={"X-API-Key": key}) as c:
            job = c.post("/v1/jobs", json={**TINY, "callback_url": hook})
            assert job.status_code == 202, job.text
            sent[job.json()["id"]] = tenant
            wf = c.post("/v1/workflows", json={"steps": [TINY], "callback_url": hook})
            assert wf.status_code == 202, wf.text
            sent[wf.json()["id"]] = tenant
    _wait(receiver, 4)

    secrets = {"acme": acme_secret, "beta": default_secret}
    for got in receiver.requests:
        assert got.path == f"/hook?token={token}"
        body = json.loads(got.body)
        tenant = sent[body["id"]]
        Webhook(secrets[tenant]).verify(got.body, got.headers)
        wrong = secrets["beta" if tenant == "acme" else "acme"]
        with pytest.raises(WebhookVerificationError):
            Webhook(wrong).verify(got.body, got.headers)
        assert body["links"]["self"].startswith(f"{BASE}/v1/")
        images = body["result"]["images"]
        assert images and all(im["url"] == f"{BASE}/v1/images/{im['id']}" for im in images)
        assert "tenant" not in body and "owner" not in body

    files = list(svc.services.settings.data_dir.glob("sdserve.db*"))  # with the WAL
    assert len(files) >= 2
    raw = b"".join(p.read_bytes() for p in files)
    assert b"hook?token" not in raw and token.encode() not in raw
    assert acme_secret.removeprefix("whsec_").encode() not in raw
