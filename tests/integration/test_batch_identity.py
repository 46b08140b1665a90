"""Same model + parameters + seed -> the same pixels, batched or alone."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.integration.live import LiveService

Factory = Callable[..., LiveService]


def _pixels(c: Any, job: dict[str, Any]) -> list[np.ndarray]:
    return [
        np.asarray(Image.open(io.BytesIO(c.get(im["url"]).content)))
        for im in job["result"]["images"]
    ]


@pytest.mark.parametrize("scheduler", ["euler_a", "dpmpp_2m"])
def test_batched_and_single_images_are_pixel_identical(
    live_factory: Factory, scheduler: str
) -> None:
    from sdserve.engine.pipelines import DiffusersEngine

    common = {"num_inference_steps": 4, "scheduler": scheduler, "guidance_scale": 5.0}
    requests = [
        {"prompt": "a red circle on a blue background", "seed": 5, "num_images": 2},
        {"prompt": "a green square", "seed": 9, "num_images": 1},
        {"prompt": "a yellow triangle", "seed": 11, "num_images": 1},
    ]
    batched = live_factory(max_batch_images=8, batch_window_ms=0)
    with batched.client() as c:
        ids = [c.post("/v1/jobs", json={**common, **r}).json()["id"] for r in requests]
        batched.start_workers(DiffusersEngine(batched.services.settings, batched.services.catalog))
        jobs = [batched.wait_status(i, {"succeeded"}) for i in ids]
        assert batched.workers[0].batches_done == 1  # all four images in one batch
        together = [px for job in jobs for px in _pixels(c, job)]

    single = live_factory(max_batch_images=1)
    single.start_workers(DiffusersEngine(single.services.settings, single.services.catalog))
    alone: list[np.ndarray] = []
    with single.client() as c:
        for r in requests:
            for k in range(r["num_images"]):
                body = {**common, **r, "seed": r["seed"] + k, "num_images": 1}
                job = c.post("/v1/jobs", json=body).json()
                alone.extend(_pixels(c, single.wait_status(job["id"], {"succeeded"})))
    assert len(together) == len(alone) == 4
    for a, b in zip(together, alone, strict=True):
        assert np.array_equal(a, b)
    assert not np.array_equal(together[0], together[1])  # different seeds differ
