"""A broken model in the models folder is not offered, and naming it is a clear
``model_unavailable`` (422), not a 500."""

from __future__ import annotations

import json
import shutil
import struct
from collections.abc import Callable
from pathlib import Path

from sdserve.engine.integrity import model_problem
from tests.integration.live import LiveService


def test_broken_models_are_not_listed_and_are_named_in_errors(
    live_factory: Callable[..., LiveService], tiny_model_dir: Path, tmp_path: Path
) -> None:
    models = tmp_path / "models"
    models.mkdir()
    (models / "empty.safetensors").write_bytes(b"")
    header = json.dumps({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}})
    (models / "cut.safetensors").write_bytes(struct.pack("<Q", len(header)) + header.encode())
    (models / "old.ckpt").write_bytes(b"\x80\x04K\x01.")
    # A diffusers folder with one weights file truncated.
    shutil.copytree(tiny_model_dir, models / "halfcopy")
    weights = next((models / "halfcopy" / "unet").glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-100])
    assert model_problem(str(models / "halfcopy")) is not None
    assert model_problem(str(tiny_model_dir)) is None

    svc = live_factory(models_dir=models)
    with svc.client() as c:
        names = {m["name"] for m in c.get("/v1/models").json()["data"]}
        for broken in ("empty", "cut", "old", "halfcopy"):
            assert broken not in names
            r = c.post("/v1/jobs", json={"prompt": "a", "model": broken})
            assert r.status_code == 422, r.text
            err = r.json()["error"]
            assert err["type"] == "model_unavailable" and broken in err["message"]
        assert c.post("/v1/jobs", json={"prompt": "a", "model": "nope"}).status_code == 422
