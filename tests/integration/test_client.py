"""The Python client and `sdserve generate` against a live server."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from sdserve.client import ApiError, Client
from tests.integration.live import LiveService

Factory = Callable[..., LiveService]


def test_client_generate_submit_wait_cancel(live_factory: Factory) -> None:
    from sdserve.engine.pipelines import DiffusersEngine

    svc = live_factory()
    svc.start_workers(DiffusersEngine(svc.services.settings, svc.services.catalog))
    with Client(svc.url) as client:
        out = client.generate("a red circle", seed=3, num_inference_steps=2, num_images=2)
        assert out["seeds"] == [3, 4]
        assert Image.open(io.BytesIO(out["image_bytes"][1])).size == (64, 64)
        job = client.submit("a blue square", idempotency_key="k1", num_inference_steps=2)
        assert (
            client.submit("a blue square", idempotency_key="k1", num_inference_steps=2)["id"]
            == job["id"]
        )
        done = client.wait(job["id"], timeout=60, poll=0.05)
        assert done["status"] == "succeeded"
        assert client.image(done["result"]["images"][0]["url"])[:4] == b"\x89PNG"
        with pytest.raises(ApiError) as err:
            client.generate("x", width=7)
        assert err.value.status == 422 and err.value.type == "validation_error"


def test_long_prompt_is_truncated_and_the_response_says_so(live_factory: Factory) -> None:
    from sdserve.engine.pipelines import DiffusersEngine

    svc = live_factory()
    svc.start_workers(DiffusersEngine(svc.services.settings, svc.services.catalog))
    with Client(svc.url) as client:
        out = client.generate("a red circle " * 60, num_inference_steps=1)
    assert any("truncated" in w for w in out["warnings"]), out["warnings"]


def test_generate_command_saves_images(live_factory: Factory, tmp_path: Path) -> None:
    from sdserve.engine.fake import FakeEngine

    svc = live_factory()
    svc.start_workers(FakeEngine())
    env = dict(os.environ, SDSERVE_URL=svc.url)
    cmd = [
        sys.executable,
        "-m",
        "sdserve",
        "generate",
        "a cat",
        "--seed",
        "5",
        "--num-images",
        "2",
        "--steps",
        "2",
        "--out",
        str(tmp_path / "imgs"),
    ]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    files = sorted((tmp_path / "imgs").iterdir())
    assert [f.name.split("-")[-1] for f in files] == ["5.png", "6.png"]
    bad = subprocess.run(
        [*cmd[:4], "x", "--steps", "0"], env=env, capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 1 and "num_inference_steps" in bad.stderr


def test_client_imports_no_server_stack() -> None:
    code = (
        "import sys, sdserve.client, sdserve.cli; "
        "bad = [m for m in ('torch', 'fastapi', 'diffusers') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
