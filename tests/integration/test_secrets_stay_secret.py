"""No secret reaches a log line, the database or /metrics.

A real `sdserve serve` (API + worker process, SQLite, DEBUG logs) is driven with keys
of every kind: the first admin key, keys made, rotated and revoked through the admin
API, refused keys (wrong secret, malformed), a tenant webhook secret, webhooks whose
URLs carry a token (one delivered, one to a closed port). Then the captured logs of
every process, the SQLite files (WAL included) and the /metrics text are searched for
every secret used.
"""

from __future__ import annotations

import base64
import sqlite3
import time
import uuid
from pathlib import Path

import httpx
import pytest

from sdserve.security.keys import parse_key
from sdserve.security.server_key import generate_secret_key
from sdserve.testing import ServeProcess, free_port
from sdserve.webhooks.signing import generate_secret
from tests.integration.test_webhooks_http import Receiver

pytestmark = pytest.mark.slow

TINY = {"prompt": "a red circle", "num_inference_steps": 2, "width": 64, "height": 64}


def _forms(secret: str) -> set[str]:
    """The secret and the parts of it that must not appear either."""
    out = {secret}
    key = parse_key(secret)
    if key is not None:
        out.add(key[1])  # a key's secret part alone
    if secret.startswith("whsec_"):
        body = secret.removeprefix("whsec_")
        out |= {body, base64.b64decode(body).hex()}
    return {s for s in out if len(s) >= 16}


def test_no_secret_in_logs_database_or_metrics(tmp_path: Path, tiny_model_dir: Path) -> None:
    data = tmp_path / "data"
    server_secret = generate_secret_key()
    global_whsec = generate_secret()
    receiver = Receiver()
    proc = ServeProcess(
        data,
        free_port(),
        auth="on",
        model=str(tiny_model_dir),
        log_level="DEBUG",
        secret_key=server_secret,
        webhook_secret=global_whsec,
        webhook_allowlist="127.0.0.1",
        public_base_url="https://api.example.test",
    )
    used: set[str] = {server_secret, global_whsec}
    metrics = ""
    try:
        proc.wait_ready()
        admin = (data / "admin_key").read_text().strip()
        used.add(admin)
        url = proc.url
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {admin}"}) as c:
            user = c.post("/v1/admin/keys", json={"tenant": "acme", "role": "user"}).json()
            reader = c.post("/v1/admin/keys", json={"tenant": "acme", "role": "reader"}).json()
            rotated = c.post(f"/v1/admin/keys/{reader['id']}/rotate", json={}).json()
            assert c.delete(f"/v1/admin/keys/{rotated['id']}").status_code == 200
            hook = c.put("/v1/admin/tenants/acme/webhook-secret", json={}).json()
            used |= {user["key"], reader["key"], rotated["key"], hook["webhook_secret"]}

        token, dead_token = "tok_" + uuid.uuid4().hex, "tok_" + uuid.uuid4().hex
        closed = f"http://127.0.0.1:{free_port()}/gone?token={dead_token}"
        used |= {token, dead_token}
        with httpx.Client(base_url=url, headers={"X-API-Key": user["key"]}, timeout=60) as c:
            good = receiver.url(path=f"/hook?token={token}")
            job = c.post("/v1/jobs", json={**TINY, "callback_url": good}).json()["id"]
            c.post("/v1/jobs", json={**TINY, "seed": 2, "callback_url": closed})
            made = c.post("/v1/generate", json=TINY)
            assert made.status_code == 200, made.text
            assert c.get(f"/v1/images/{made.json()['image_ids'][0]}").status_code == 200
            assert c.get(f"/v1/jobs/{job}").status_code == 200
        # Refused: a real id with a wrong secret, a revoked key, garbage, a query key.
        wrong = f"sk-{user['id']}-{'Q' * 43}"
        garbage = "sk-" + uuid.uuid4().hex + "-" + uuid.uuid4().hex
        used |= {wrong, garbage}
        for headers in (
            {"Authorization": f"Bearer {wrong}"},
            {"X-API-Key": rotated["key"]},
            {"Authorization": f"Bearer {garbage}"},
            {"Authorization": f"Basic {garbage}"},
        ):
            assert httpx.get(f"{url}/v1/jobs", headers=headers).status_code == 401
        assert httpx.get(f"{url}/v1/jobs", params={"api_key": user["key"]}).status_code == 401
        with httpx.Client(base_url=url, headers={"X-API-Key": reader["key"]}) as c:
            assert c.post("/v1/jobs", json=TINY).status_code == 403

        deadline = time.monotonic() + 120
        while not receiver.requests or not _failed_once(data / "sdserve.db"):
            assert time.monotonic() < deadline, "webhooks were not attempted"
            time.sleep(0.2)
        assert receiver.requests[0].path == f"/hook?token={token}"
        metrics = httpx.get(f"{url}/metrics").text
        assert "sdserve_errors_total" in metrics and "unauthorized" in metrics
    finally:
        proc.stop()
        receiver.stop()

    logs = proc.log_path.read_text()
    # The lines that could have carried a secret were written (and are searched).
    for line in ("first admin key", "ready", "delivered (HTTP 200)", "Connection refused"):
        assert line in logs, f"{line!r} not logged: the search would prove nothing"
    database = b"".join(p.read_bytes() for p in sorted(data.glob("sdserve.db*")))
    assert b"api_keys" in database and user["id"].encode() in database
    leaks = [
        (where, s)
        for s in sorted(set().union(*(_forms(u) for u in used)))
        for where, text in (
            ("logs", logs.encode()),
            ("database", database),
            ("metrics", metrics.encode()),
        )
        if s.encode() in text
    ]
    assert leaks == [], leaks
    for header in ("authorization", "x-api-key", "bearer sk-"):
        assert header not in logs.lower(), header


def _failed_once(db: Path) -> bool:
    conn = sqlite3.connect(db, timeout=10)
    try:
        row = conn.execute(
            "SELECT count(*) FROM outbox WHERE attempts > 0 AND last_error IS NOT NULL"
        ).fetchone()
    finally:
        conn.close()
    return bool(row[0])
