"""The model registry without HTTP: the registry file, revisions and their cache,
rollout splits against binomial bounds, stickiness, routing rules, reload."""

from __future__ import annotations

import math
import os
import re
import signal
import time
from pathlib import Path

import pytest

from sdserve.domain.errors import InvalidRequest
from sdserve.engine.catalog import Catalog, describe
from sdserve.models.registry import build_catalog_from, reloadable
from sdserve.models.registry_file import RegistryError
from sdserve.models.reload import install_sighup
from sdserve.models.revision import RevisionCache
from sdserve.models.rollout import Rollout
from sdserve.models.routing import RequestFacts

N = 1000


def _within_binomial(count: int, n: int, p: float, z: float = 4.5) -> bool:
    """``count`` successes of ``n`` within z standard deviations of n*p (a false
    failure is a ~1e-5 event)."""
    sd = math.sqrt(n * p * (1 - p))
    return abs(count - n * p) <= z * sd


def _write_weights(folder: Path, payload: bytes) -> None:
    (folder / "unet").mkdir(parents=True, exist_ok=True)
    (folder / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(payload)
    (folder / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')


def _registry(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "registry.toml"
    path.write_text(body)
    return path


REGISTRY = """
[models.photo-v1]
source = "a"
aliases = ["photo-stable"]
scheduler = "ddim"
width = 320
height = 256

[models.photo-v2]
source = "b"
dtype = "float16"

[models.cheap]
source = "a"

[rollouts.photo]
versions = { photo-v1 = 90, photo-v2 = 10 }

[[routes]]
name = "small-drafts"
to = "cheap"
from = ["photo"]
max_pixels = 65536
max_steps = 10
priority = ["low", "normal"]
"""


def _build(tmp_path: Path, cache: RevisionCache | None = None) -> Catalog:
    default = describe("fallback", str(tmp_path / "a"))
    reg = tmp_path / "registry.toml"
    return build_catalog_from(
        default,
        tmp_path / "models",
        [],
        reg,
        cache or RevisionCache(tmp_path / "rev.json"),
        allow_hub=False,
    )


@pytest.fixture
def folders(tmp_path: Path) -> Path:
    _write_weights(tmp_path / "a", b"weights-a" * 100)
    _write_weights(tmp_path / "b", b"weights-b" * 100)
    _registry(tmp_path, REGISTRY)
    return tmp_path


def test_registry_entries_aliases_and_revisions(folders: Path) -> None:
    cat = _build(folders)
    v1, v2, cheap = cat.get("photo-v1"), cat.get("photo-v2"), cat.get("cheap")
    assert cat.get("photo-stable") == v1
    assert (v1.default_scheduler, v1.default_width, v1.default_height) == ("ddim", 320, 256)
    assert v2.dtype == "float16" and v1.family == "sd1"
    assert len(v1.revision) == 12 and v1.revision == cheap.revision != v2.revision
    assert set(cat.rollouts()) == {"photo"}


def test_revisions_are_hashed_once_and_again_when_weights_change(folders: Path) -> None:
    first = RevisionCache(folders / "rev.json")
    before = _build(folders, first).get("photo-v2").revision
    assert first.hashed == 2  # a and b (cheap shares a's file)
    again = RevisionCache(folders / "rev.json")
    assert _build(folders, again).get("photo-v2").revision == before
    assert again.hashed == 0  # size + mtime unchanged: read from the cache file
    _write_weights(folders / "b", b"weights-B" * 101)
    changed = RevisionCache(folders / "rev.json")
    assert _build(folders, changed).get("photo-v2").revision != before
    assert changed.hashed == 1


def test_rollout_split_over_1000_sticky_users_within_binomial_bounds(folders: Path) -> None:
    cat = _build(folders)
    picks = [cat.choose("photo", f"user-{i}").info.name for i in range(N)]
    assert _within_binomial(picks.count("photo-v2"), N, 0.10)
    assert picks.count("photo-v1") + picks.count("photo-v2") == N


def test_rollout_split_over_1000_keyless_requests_within_binomial_bounds(folders: Path) -> None:
    cat = _build(folders)
    picks = [cat.choose("photo", None).info.name for _ in range(N)]
    assert _within_binomial(picks.count("photo-v2"), N, 0.10)


def test_sticky_key_keeps_its_version_and_moves_only_when_weights_move() -> None:
    ro = Rollout("x", (("v1", 90.0), ("v2", 10.0)))
    for i in range(50):
        first = ro.choose(f"k{i}")
        assert all(ro.choose(f"k{i}") == first for _ in range(5))
    # Shifting weight v1 -> v2 moves keys only from v1 to v2, never back.
    wider = Rollout("x", (("v1", 50.0), ("v2", 50.0)))
    for i in range(500):
        if ro.choose(f"k{i}") == "v2":
            assert wider.choose(f"k{i}") == "v2"
    assert Rollout("x", (("v1", 0.0), ("v2", 1.0))).choose("k") == "v2"


def test_routing_rules_fire_on_their_conditions_only(folders: Path) -> None:
    cat = _build(folders)
    choice = cat.choose("photo", "u")

    def facts(**kw: object) -> RequestFacts:
        base: dict[str, object] = {
            "requested": "photo",
            "resolved": choice.info.name,
            "task": "txt2img",
            "pixels": 64 * 64,
            "steps": 4,
            "prompt_chars": 10,
            "priority": "normal",
        }
        return RequestFacts(**(base | kw))  # type: ignore[arg-type]

    routed = cat.route(choice, facts())
    assert (routed.info.name, routed.rule, routed.alias) == ("cheap", "small-drafts", "photo")
    for miss in (
        facts(pixels=512 * 512),
        facts(steps=30),
        facts(priority="high"),
        facts(requested="photo-v2", resolved="photo-v2"),
    ):
        assert cat.route(choice, miss).rule is None


def test_bad_registry_is_refused_and_reload_keeps_the_old_catalog(folders: Path) -> None:
    cat = reloadable(lambda: _build(folders))
    _registry(folders, REGISTRY.replace("photo-v2 = 10", "nope = 10"))
    with pytest.raises(RegistryError, match=re.escape("rollouts.photo: unknown model 'nope'")):
        cat.reload()
    assert cat.choose("photo", "u").info.name in ("photo-v1", "photo-v2")
    _registry(folders, REGISTRY.replace("width = 320", 'width = "wide"'))
    with pytest.raises(RegistryError, match=re.escape("models.photo-v1.width")):
        cat.reload()


def test_reload_changes_weights_without_a_new_catalog_object(folders: Path) -> None:
    cat = reloadable(lambda: _build(folders))
    _registry(
        folders, REGISTRY.replace("photo-v1 = 90, photo-v2 = 10", "photo-v1 = 0, photo-v2 = 1")
    )
    cat.reload()
    assert {cat.choose("photo", f"u{i}").info.name for i in range(50)} == {"photo-v2"}


def test_unknown_name_reloads_once_then_finds_a_new_model(folders: Path) -> None:
    cat = reloadable(lambda: _build(folders))
    _registry(folders, REGISTRY + '\n[models.late]\nsource = "b"\n')
    cat._last_reload -= 5  # as if loaded a while ago
    with pytest.raises(InvalidRequest, match="unknown model 'late'"):
        cat.get("late")  # the API's catalog reloads only when told
    cat.reload_on_miss = True  # a worker's
    assert cat.get("late").name == "late"


def test_sighup_reloads_the_catalog(folders: Path) -> None:
    cat = reloadable(lambda: _build(folders))
    old = signal.getsignal(signal.SIGHUP)
    try:
        install_sighup(cat)
        _registry(folders, REGISTRY + '\n[models.added]\nsource = "b"\n')
        os.kill(os.getpid(), signal.SIGHUP)
        deadline = time.monotonic() + 10
        while "added" not in cat.names() and time.monotonic() < deadline:
            time.sleep(0.02)  # short poll: the reload thread runs as soon as woken
        assert "added" in cat.names() and cat.generation == 1
    finally:
        signal.signal(signal.SIGHUP, old)


def test_hub_entries_need_hub_downloads(folders: Path) -> None:
    _registry(folders, REGISTRY + '\n[models.hubbed]\nhub = "org/model"\nfamily = "sdxl"\n')
    assert "hubbed" not in _build(folders).names()
    cat = build_catalog_from(
        describe("fallback", str(folders / "a")),
        folders / "models",
        [],
        folders / "registry.toml",
        RevisionCache(None),
        allow_hub=True,
    )
    hub = cat.get("hubbed")
    assert (hub.source, hub.family, hub.default_width, hub.revision) == (
        "org/model",
        "sdxl",
        1024,
        "",
    )
