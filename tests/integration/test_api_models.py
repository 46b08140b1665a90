"""The model registry over real HTTP: /v1/models (OpenAI-readable, revisions, live
placements and memory after swaps), rollouts and routing recorded on jobs and in the
metrics, reload by the admin API, SDXL end to end with its size conditioning."""

from __future__ import annotations

import base64
import io
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sdserve.engine.fake import FakeEngine
from sdserve.worker.registry import WorkerState
from sdserve.worker.state_publisher import publish
from tests.integration.live import LiveService

Factory = Callable[..., LiveService]


def _registry(models: Path, tiny: Path, v2_weight: int = 10) -> None:
    models.mkdir(parents=True, exist_ok=True)
    (models / "registry.toml").write_text(
        f"""
[models.photo-v1]
source = "{tiny}"
aliases = ["photo-stable"]
[models.photo-v2]
source = "{tiny}"
[models.cheap]
source = "{tiny}"
[rollouts.photo]
versions = {{ photo-v1 = {100 - v2_weight}, photo-v2 = {v2_weight} }}
[[routes]]
name = "drafts"
to = "cheap"
from = ["photo"]
max_steps = 3
"""
    )


@pytest.fixture
def svc(live_factory: Factory, tmp_path: Path, tiny_model_dir: Path) -> LiveService:
    _registry(tmp_path / "models", tiny_model_dir)
    live = live_factory(models_dir=str(tmp_path / "models"))
    live.start_workers(FakeEngine())
    return live


def _job(c: object, **body: object) -> dict[str, object]:
    r = c.post("/v1/jobs", json={"prompt": "a cat", "num_inference_steps": 8, **body})  # type: ignore[attr-defined]
    assert r.status_code == 202, r.text
    return dict(r.json()["parameters"])


def test_models_list_is_openai_readable_with_registry_fields(svc: LiveService) -> None:
    with svc.client() as c:
        body = c.get("/v1/models").json()
    assert body["object"] == "list"
    by_id = {m["id"]: m for m in body["data"]}
    for m in body["data"]:
        assert m["object"] == "model" and isinstance(m["created"], int) and m["owned_by"]
    v1 = by_id["photo-v1"]
    assert v1["aliases"] == ["photo-stable"] and len(v1["revision"]) == 12
    assert v1["source_kind"] == "folder" and v1["tasks"] == ["txt2img", "img2img", "inpaint"]
    assert body["rollouts"] == [
        {"alias": "photo", "versions": {"photo-v1": 0.9, "photo-v2": 0.1}, "sticky": True}
    ]
    assert body["routes"][0]["name"] == "drafts"


def test_rollout_is_sticky_per_user_recorded_and_counted(svc: LiveService) -> None:
    with svc.client() as c:
        seen = {}
        for i in range(40):
            params = _job(c, model="photo", user=f"u{i}")
            assert params["model_alias"] == "photo" and params["route"] is None
            assert params["model_revision"]
            again = _job(c, model="photo", user=f"u{i}")
            assert again["model"] == params["model"]  # sticky
            seen[params["model"]] = seen.get(params["model"], 0) + 1
        assert set(seen) <= {"photo-v1", "photo-v2"} and seen.get("photo-v1", 0) > 20
        metrics = c.get("/metrics").text
    assert 'sdserve_model_choices_total{alias="photo",model="photo-v1",rule=""}' in metrics


def test_reload_moves_the_weights_without_a_restart(
    svc: LiveService, tmp_path: Path, tiny_model_dir: Path
) -> None:
    _registry(tmp_path / "models", tiny_model_dir, v2_weight=100)
    with svc.client() as c:
        r = c.post("/v1/admin/models/reload")
        assert r.status_code == 200, r.text
        assert r.json()["rollouts"]["photo"] == {"photo-v1": 0.0, "photo-v2": 1.0}
        assert {_job(c, model="photo", user=f"u{i}")["model"] for i in range(10)} == {"photo-v2"}
        (tmp_path / "models" / "registry.toml").write_text("[models.x]\nsource = 3\n")
        bad = c.post("/v1/admin/models/reload")
        assert bad.status_code == 422 and "registry" in bad.text
        assert _job(c, model="photo")["model"] == "photo-v2"  # the old catalog serves


def test_routing_rule_fires_is_recorded_and_can_be_refused(svc: LiveService) -> None:
    with svc.client() as c:
        routed = _job(c, model="photo", num_inference_steps=2)
        assert (routed["model"], routed["route"], routed["model_alias"]) == (
            "cheap",
            "drafts",
            "photo",
        )
        kept = _job(c, model="photo", num_inference_steps=2, routing=False, user="x")
        assert kept["model"] in ("photo-v1", "photo-v2") and kept["route"] is None
        assert _job(c, model="photo-stable")["model"] == "photo-v1"
        assert 'rule="drafts"' in c.get("/metrics").text


def test_sdxl_fields_are_refused_for_other_models(svc: LiveService) -> None:
    with svc.client() as c:
        r = c.post("/v1/jobs", json={"prompt": "x", "original_size": [512, 512]})
        assert r.status_code == 422
        assert "original_size" in r.text and "SDXL" in r.text
        r = c.post("/v1/jobs", json={"prompt": "x", "crops_coords_top_left": [-1, 0]})
        assert r.status_code == 422 and "crops_coords_top_left" in r.text
        r = c.post("/v1/jobs", json={"prompt": "x", "user": ""})
        assert r.status_code == 422 and "user" in r.text


def _pixels(data: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB"))


@pytest.fixture
def xl_svc(live_factory: Factory, edit_models_dir: Path) -> LiveService:
    from sdserve.engine.pipelines import DiffusersEngine

    live = live_factory(models_dir=str(edit_models_dir))
    engine = DiffusersEngine(live.services.settings, live.services.catalog, max_loaded=1)
    live.start_workers(engine)
    live.engine = engine  # type: ignore[attr-defined]
    return live


def test_sdxl_txt2img_with_size_conditioning_end_to_end(xl_svc: LiveService) -> None:
    base = {"model": "xl", "prompt": "a red square", "seed": 3, "num_inference_steps": 2}
    cond = {"original_size": [256, 192], "target_size": [64, 64], "crops_coords_top_left": [8, 0]}
    with xl_svc.client() as c:
        plain = c.post("/v1/generate", json={**base, "width": 64, "height": 64})
        assert plain.status_code == 200, plain.text
        r = c.post("/v1/generate", json={**base, "width": 64, "height": 64, **cond})
        assert r.status_code == 200, r.text
        again = c.post("/v1/generate", json={**base, "width": 64, "height": 64, **cond})
    out = r.json()
    for name, value in cond.items():
        assert out["parameters"][name] == value
    assert _pixels(out["images"][0]).shape == (64, 64, 3)
    # The conditioning reaches the UNet: same seed, different image; same again: same.
    assert not np.array_equal(_pixels(out["images"][0]), _pixels(plain.json()["images"][0]))
    assert np.array_equal(_pixels(out["images"][0]), _pixels(again.json()["images"][0]))


def test_models_list_follows_swaps_live(xl_svc: LiveService) -> None:
    """One model slot: each generate swaps; the worker's published state (and so
    /v1/models) names the model now loaded and the bytes it holds."""
    engine = xl_svc.engine  # type: ignore[attr-defined]
    state = WorkerState(id="w-live", pid=1, ready=True, device="cpu", host="h")
    registry = xl_svc.services.registry
    registry.remove(xl_svc.workers[0].id)  # the static state start_workers published
    lock = threading.Lock()
    with xl_svc.client() as c:
        for model in ("xl", "tiny", "xl"):
            body = {"model": model, "prompt": "p", "seed": 1, "num_inference_steps": 1}
            assert (
                c.post("/v1/generate", json={**body, "width": 64, "height": 64}).status_code == 200
            )
            with lock:
                publish(registry, state, engine)
            listed = {m["id"]: m for m in c.get("/v1/models").json()["data"]}
            assert listed[model]["loaded"] is True
            [where] = listed[model]["loaded_on"]
            assert where["worker"] == "w-live" and where["memory_bytes"] > 100_000
            other = "tiny" if model == "xl" else "xl"
            assert listed[other]["loaded"] is False and listed[other]["loaded_on"] == []


def test_rollout_is_sticky_per_api_key(
    live_factory: Factory, tmp_path: Path, tiny_model_dir: Path
) -> None:
    from sdserve.security.keys import Role

    _registry(tmp_path / "models", tiny_model_dir, v2_weight=50)
    svc = live_factory(models_dir=str(tmp_path / "models"), auth="on")
    keys = [svc.services.keys.create("acme", Role.user).key for _ in range(20)]
    chosen = []
    for key in keys:
        with svc.client(headers={"Authorization": f"Bearer {key}"}) as c:
            models = {_job(c, model="photo")["model"] for _ in range(3)}
        assert len(models) == 1  # the same version for every request of a key
        chosen.append(models.pop())
    # 20 keys at 50/50: both versions show up (all on one side: p = 2 * 0.5**20).
    assert set(chosen) == {"photo-v1", "photo-v2"}


def test_openai_sdk_lists_the_models(svc: LiveService) -> None:
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=svc.url + "/v1", api_key="unused-auth-is-off")
    models = {m.id: m for m in client.models.list()}
    assert {"photo-v1", "photo-v2", "cheap"} <= set(models)
    assert models["photo-v1"].object == "model" and models["photo-v1"].owned_by == "sdserve"
