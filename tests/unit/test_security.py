"""Keys, image ids, sealing, the server secret and the start-up guards (pure logic)."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from sdserve.api.auth import OPEN, Principal
from sdserve.config import Settings
from sdserve.domain.jobs import image_id, new_job_id
from sdserve.domain.requests import OutputFormat
from sdserve.security.bootstrap import exposure_problem, is_loopback
from sdserve.security.keys import Role, format_key, hash_secret, new_key_material, parse_key
from sdserve.security.server_key import (
    SealError,
    SecretKeyMissing,
    ServerKey,
    load_server_key,
)
from sdserve.storage.base import valid_image_id
from sdserve.webhooks.tenants import absolute_links

KEY_A = ServerKey(b"a" * 48).image_key
KEY_B = ServerKey(b"b" * 48).image_key


# --- keys ---


def test_key_material_round_trips_and_is_random() -> None:
    seen = set()
    for _ in range(200):
        key_id, secret = new_key_material()
        key = format_key(key_id, secret)
        assert parse_key(key) == (key_id, secret)
        seen.add(secret)
    assert len(seen) == 200
    assert len(hash_secret("0" * 16, "x" * 43)) == 64


def test_roles_include_the_ones_below() -> None:
    assert Role.admin.includes(Role.user) and Role.admin.includes(Role.reader)
    assert Role.user.includes(Role.reader) and not Role.user.includes(Role.admin)
    assert not Role.reader.includes(Role.user)


def test_principal_sees_only_its_tenant_unless_auth_is_off() -> None:
    acme = Principal("acme", Role.admin, "0" * 16)
    assert acme.can_see("acme")
    assert not acme.can_see("beta") and not acme.can_see(None)
    assert OPEN.can_see("acme") and OPEN.can_see(None) and OPEN.owner is None


# --- image ids ---


def _old_unkeyed(job_id: str, index: int) -> str:
    """How 0.1 derived ids: anyone holding a job id could compute them."""
    return hashlib.sha256(f"{job_id}:{index}".encode()).hexdigest()[:32] + ".png"


def test_image_ids_are_deterministic_per_job_index_and_key() -> None:
    job = new_job_id()
    first = image_id(job, 0, OutputFormat.png, KEY_A)
    assert first == image_id(job, 0, OutputFormat.png, KEY_A)  # a rerun overwrites
    assert valid_image_id(first)
    assert first != image_id(job, 1, OutputFormat.png, KEY_A)
    assert image_id(job, 0, OutputFormat.webp, KEY_A).endswith(".webp")


def test_image_ids_cannot_be_derived_from_the_job_id_without_the_key() -> None:
    jobs = [new_job_id() for _ in range(500)]
    with_a = [image_id(j, i, OutputFormat.png, KEY_A) for j in jobs for i in range(2)]
    with_b = [image_id(j, i, OutputFormat.png, KEY_B) for j in jobs for i in range(2)]
    # Another key gives unrelated ids, and so does the old public derivation.
    assert not set(with_a) & set(with_b)
    assert not set(with_a) & {_old_unkeyed(j, i) for j in jobs for i in range(2)}
    # Knowing one id does not help with the next index of the same job.
    assert all(a[:8] != b[:8] for a, b in zip(with_a[::2], with_a[1::2], strict=True))
    # Uniform: every bit position is set in about half of the 1000 ids (a relation to
    # the job id, e.g. a shared prefix, would pin bits).
    bits = [int(i[:32], 16) for i in with_a]
    for position in range(128):
        ones = sum((b >> position) & 1 for b in bits)
        assert 400 < ones < 600, (position, ones)
    with pytest.raises(ValueError):
        image_id(jobs[0], 0, OutputFormat.png, b"")


# --- sealing and the server secret ---


def test_sealing_round_trips_is_randomised_and_bound_to_its_purpose() -> None:
    sealer = ServerKey(b"s" * 40).sealer
    url = "https://hooks.example.com/h?token=tok_abc123"
    sealed = sealer.seal(url, "callback_url")
    assert "tok_abc123" not in sealed and sealed.startswith("enc1:")
    assert sealed != sealer.seal(url, "callback_url")  # a fresh nonce each time
    assert sealer.open(sealed, "callback_url") == url
    with pytest.raises(SealError):
        sealer.open(sealed, "webhook_secret")
    with pytest.raises(SealError, match="SDSERVE_SECRET_KEY"):
        ServerKey(b"t" * 40).sealer.open(sealed, "callback_url")
    with pytest.raises(SealError):
        sealer.open(sealed[:-4], "callback_url")
    # A 0.1 data dir's plain URL is sent as stored.
    assert sealer.open("https://plain.example.com/h", "callback_url") == (
        "https://plain.example.com/h"
    )


def test_derived_keys_differ_per_purpose_and_secret() -> None:
    a = ServerKey(b"x" * 40)
    assert a.derive("image_ids") != a.derive("seal")
    assert a.image_key != ServerKey(b"y" * 40).image_key
    assert "x" * 40 not in repr(a)


def test_embedded_secret_key_is_generated_once_private(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    first = load_server_key(settings)
    path = tmp_path / "secret_key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_server_key(settings).image_key == first.image_key
    assert len(path.read_text().strip()) >= 32


def test_configured_secret_key_wins_and_is_checked(tmp_path: Path) -> None:
    secret = "k" * 40
    configured = load_server_key(Settings(data_dir=tmp_path, secret_key=secret))
    assert configured.image_key == ServerKey(secret.encode()).image_key
    assert not (tmp_path / "secret_key").exists()
    with pytest.raises(SecretKeyMissing, match="at least 32"):
        load_server_key(Settings(data_dir=tmp_path, secret_key="short"))
    with pytest.raises(SecretKeyMissing, match="required with SDSERVE_QUEUE_BACKEND=redis"):
        load_server_key(Settings(data_dir=tmp_path, queue_backend="redis"))
    assert "k" * 40 not in repr(Settings(secret_key=secret))


# --- start-up guard ---


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.5.6.7", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.5", False),
        ("example.com", False),
    ],
)
def test_loopback_detection(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_open_api_on_a_public_address_needs_insecure() -> None:
    public_off = Settings(host="0.0.0.0", auth="off")
    problem = exposure_problem(public_off, insecure=False)
    assert problem is not None and "--insecure" in problem and "0.0.0.0" in problem
    assert exposure_problem(public_off, insecure=True) is None
    assert exposure_problem(Settings(host="0.0.0.0", auth="on"), insecure=False) is None
    assert exposure_problem(Settings(host="127.0.0.1", auth="off"), insecure=False) is None


# --- webhook payload links ---


def test_links_become_absolute_and_nothing_else_changes() -> None:
    payload = {
        "id": "job_1",
        "prompt": "/v1/not-a-link",
        "result": {"images": [{"id": "a.png", "url": "/v1/images/a.png", "seed": 1}]},
        "links": {"self": "/v1/jobs/job_1"},
        "steps": [{"result": {"images": [{"url": "/v1/images/b.png"}]}}],
    }
    out = absolute_links(payload, "https://api.example.com/")
    assert out["result"]["images"][0]["url"] == "https://api.example.com/v1/images/a.png"
    assert out["links"]["self"] == "https://api.example.com/v1/jobs/job_1"
    assert out["steps"][0]["result"]["images"][0]["url"] == (
        "https://api.example.com/v1/images/b.png"
    )
    assert out["prompt"] == "/v1/not-a-link"
    assert payload["links"]["self"] == "/v1/jobs/job_1"  # a copy: the entry is untouched
    assert absolute_links(payload, "") is payload


def test_no_secret_file_is_world_readable_even_under_a_loose_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        load_server_key(Settings(data_dir=tmp_path / "d"))
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "d" / "secret_key").stat().st_mode) == 0o600
