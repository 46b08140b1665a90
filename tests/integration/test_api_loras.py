"""LoRA adapters through the native API: validation at the edge, a job that uses one."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.integration.live import LiveService

Factory = Callable[..., LiveService]


@pytest.fixture(scope="module")
def loras(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sdserve.engine.demo_lora import make_lora

    root = tmp_path_factory.mktemp("api-loras")
    make_lora(tiny_model_dir, root / "style.safetensors", "kohya", seed=3)
    return root


def _problems(r: Any) -> dict[str, str]:
    assert r.status_code == 422, r.text
    body = r.json()
    return {p["field"]: p["message"] + str(p.get("limit", "")) for p in body["error"]["fields"]}


def test_adapter_validation_and_a_job_with_one(live_factory: Factory, loras: Path) -> None:
    from sdserve.engine.pipelines import DiffusersEngine

    svc = live_factory(loras_dir=loras)
    cases = [
        ([{"name": "nope"}], "loras[0].name", "nope"),
        ([{"name": "style"}, {"name": "gone", "scale": 1}], "loras[1].name", "gone"),
        ([{"name": "style", "scale": 4.5}], "loras.0.scale", "4"),
        ([{"name": "style", "scale": -5}], "loras.0.scale", "-4"),
        ([{"name": "../etc/passwd"}], "loras.0.name", "pattern"),
        ([{"name": "style"}, {"name": "style"}], "loras", "once"),
        ([{"name": f"s{i}"} for i in range(6)], "loras", "5"),
    ]
    base = {"prompt": "a red circle", "num_inference_steps": 2, "seed": 5}
    with svc.client() as c:
        for value, field, needle in cases:
            problems = _problems(c.post("/v1/jobs", json=base | {"loras": value}))
            assert field in problems, (value, problems)
            assert needle in problems[field], (value, problems)
    svc.start_workers(DiffusersEngine(svc.services.settings, svc.services.catalog))
    with svc.client() as c:
        plain = c.post("/v1/generate", json=base)
        styled = c.post("/v1/generate", json=base | {"loras": [{"name": "style", "scale": 0.7}]})
    assert plain.status_code == styled.status_code == 200, styled.text
    assert styled.json()["parameters"]["loras"] == [{"name": "style", "scale": 0.7}]
    assert styled.json()["images"] != plain.json()["images"]
