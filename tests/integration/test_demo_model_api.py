"""The shipped demo model through the real API: images match their prompts."""

from __future__ import annotations

import io
from collections.abc import Callable

from PIL import Image

from sdserve.training.scenes import read_image
from sdserve.wiring import packaged_demo_available
from tests.integration.live import LiveService


def test_the_demo_model_ships() -> None:
    """Missing weights are a broken package: this fails, nothing skips."""
    assert packaged_demo_available()


# (prompt, object colour, background colour or None when the scorer may read the
# model's cream "white" as yellow, seed). Deterministic on CPU.
CASES = [
    ("a red circle on a blue background", "red", "blue", 1),
    ("a green square on a black background", "green", "black", 2),
    ("a blue triangle on a yellow background", "blue", "yellow", 3),
    ("a yellow circle on a red background", "yellow", "red", 4),
    ("a black square on a white background", "black", None, 5),
]


def test_default_model_is_the_demo_and_draws_what_is_asked(
    live_factory: Callable[..., LiveService],
) -> None:
    from sdserve.engine.pipelines import DiffusersEngine

    svc = live_factory(model="")  # nothing configured: the packaged demo model
    svc.start_workers(DiffusersEngine(svc.services.settings, svc.services.catalog))
    with svc.client() as c:
        models = c.get("/v1/models").json()["data"]
        assert models[0]["name"] == "demo" and models[0]["default"]
        for prompt, colour, background, seed in CASES:
            r = c.post("/v1/generate", json={"prompt": prompt, "seed": seed})
            assert r.status_code == 200, r.text
            out = r.json()
            assert out["parameters"]["scheduler"] == "ddim"  # the model's own
            assert out["parameters"]["num_inference_steps"] == 20
            job = c.get(f"/v1/jobs/{out['job_id']}").json()
            image = Image.open(io.BytesIO(c.get(job["result"]["images"][0]["url"]).content))
            assert image.size == (64, 64)
            reading = read_image(image)
            assert reading.color == colour, (prompt, reading)
            if background is not None:
                assert reading.background == background, (prompt, reading)
