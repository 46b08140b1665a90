"""Webhook signing, the secret file, and the retry schedule."""

from __future__ import annotations

import base64
import random
import stat
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from sdserve.config import Settings
from sdserve.webhooks import backoff
from sdserve.webhooks.signing import generate_secret, load_or_create_secret, sign


def test_sign_verifies_with_the_library() -> None:
    secret = generate_secret()
    body = b'{"id":"job_1","type":"job.succeeded","prompt":"caf\xc3\xa9"}'
    headers = sign(secret, "msg_1", time.time(), body)
    assert set(headers) == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    assert headers["webhook-id"] == "msg_1"
    assert headers["webhook-signature"].startswith("v1,")
    assert Webhook(secret).verify(body, headers)["type"] == "job.succeeded"


def test_tampered_body_or_wrong_secret_fails() -> None:
    secret = generate_secret()
    headers = sign(secret, "msg_1", time.time(), '{"a":1}')
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify('{"a":2}', headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(generate_secret()).verify('{"a":1}', headers)


def test_generated_secret_format() -> None:
    secret = generate_secret()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 24
    assert generate_secret() != secret


def test_configured_secret_wins(tmp_path: Path) -> None:
    secret = generate_secret()
    settings = Settings(data_dir=tmp_path, webhook_secret=secret)
    assert load_or_create_secret(settings) == secret
    assert not (tmp_path / "webhook_secret").exists()


def test_invalid_configured_secret_fails_fast(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="invalid webhook secret"):
        load_or_create_secret(Settings(data_dir=tmp_path, webhook_secret="whsec_!!!"))


def test_secret_generated_once_and_private(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    first = load_or_create_secret(settings)
    path = tmp_path / "data" / "webhook_secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert first.startswith("whsec_")
    assert load_or_create_secret(settings) == first  # persisted, not regenerated
    assert [p.name for p in path.parent.iterdir()] == ["webhook_secret"]  # no temp left


def test_concurrent_first_use_agrees_on_one_secret(tmp_path: Path) -> None:
    # API and workers may start together: all must end up signing with one key.
    settings = Settings(data_dir=tmp_path)
    with ThreadPoolExecutor(8) as pool:
        secrets = set(pool.map(lambda _: load_or_create_secret(settings), range(16)))
    assert len(secrets) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["webhook_secret"]


def test_backoff_follows_schedule_with_jitter() -> None:
    rng = random.Random(7)
    for attempt, base in enumerate(backoff.SCHEDULE_SECONDS, start=1):
        delays = [backoff.schedule(attempt, rng) for _ in range(50)]
        assert all(base * 0.8 <= d <= base * 1.2 for d in delays)
        assert len(set(delays)) > 1  # jittered
    assert backoff.schedule(99, rng) <= 36000 * 1.2
    assert sum(backoff.SCHEDULE_SECONDS) / 3600 == pytest.approx(27.0, abs=1)
    with pytest.raises(ValueError):
        backoff.schedule(0)
