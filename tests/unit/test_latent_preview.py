"""The latent -> RGB preview (no VAE), its throttle and the preview ids."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from PIL import Image

from sdserve.domain.jobs import image_id
from sdserve.domain.previews import preview_id, previews_allowed
from sdserve.domain.requests import OutputFormat
from sdserve.engine.base import BatchItem, BatchRequest
from sdserve.engine.latent_preview import LatentPreviewer, latent_preview, latent_rgb
from sdserve.engine.previews import first_rows, preview_sink
from sdserve.storage.base import valid_image_id


class Sink:
    def __init__(self, every_s: float) -> None:
        self.every_s = every_s
        self.got: list[tuple[str, Image.Image]] = []

    def __call__(self, job_id: str, image: Image.Image) -> None:
        self.got.append((job_id, image))


def test_latent_rgb_shape_dtype_and_range() -> None:
    latents = torch.randn(4, 8, 12, generator=torch.Generator().manual_seed(0)) * 5
    rgb = latent_rgb(latents)
    assert rgb.shape == (8, 12, 3) and rgb.dtype == torch.uint8 and rgb.device.type == "cpu"
    assert int(rgb.min()) == 0 and int(rgb.max()) == 255  # large values are clamped
    # Zero latents are mid grey; channel 0 alone adds its (R, G, B) factors.
    assert latent_rgb(torch.zeros(4, 2, 2))[0, 0].tolist() == [127, 127, 127]
    one = torch.zeros(4, 1, 1)
    one[0] = 1.0
    assert latent_rgb(one)[0, 0].tolist() == [165, 153, 154]  # (1 + f) * 127.5
    assert latent_rgb(torch.zeros(4, 1, 1, dtype=torch.float16)).dtype == torch.uint8


def test_latent_preview_is_the_request_size_and_refuses_other_latents() -> None:
    image = latent_preview(torch.randn(4, 8, 12), 96, 64)
    assert image.size == (96, 64) and image.mode == "RGB"
    with pytest.raises(ValueError, match="shape"):
        latent_rgb(torch.zeros(16, 8, 8))


def test_previewer_sends_each_jobs_first_row_at_most_every_every_s() -> None:
    req = BatchRequest(
        "m", "txt2img", 64, 64, 4, 7.5, "euler",
        [BatchItem("a", "x", "", [1, 2]), BatchItem("b", "y", "", [3])],
    )  # fmt: skip
    assert first_rows(req) == {"a": 0, "b": 2}
    latents = torch.zeros(3, 4, 8, 8)
    latents[2] = 2.0  # b's row: bright; a's first row: grey
    sink = Sink(every_s=3600)
    previewer = LatentPreviewer(sink, first_rows(req), 64, 64)
    previewer({"latents": latents}, set())
    assert [j for j, _ in sink.got] == ["a", "b"]
    assert sink.got[0][1].getpixel((5, 5)) == (127, 127, 127)
    assert sink.got[1][1].getpixel((5, 5)) != (127, 127, 127)
    previewer({"latents": latents}, set())  # within every_s: nothing
    assert len(sink.got) == 2
    fresh = Sink(every_s=0.000001)
    previewer = LatentPreviewer(fresh, first_rows(req), 64, 64)
    previewer({"latents": latents}, {"a"})  # canceled jobs get none
    previewer({"latents": torch.zeros(3, 16, 8, 8)}, set())  # not SD latents: none
    previewer({}, set())
    assert [j for j, _ in fresh.got] == ["b"]


def test_preview_sink_only_from_callbacks_that_carry_one() -> None:
    def plain(step: int, total: int) -> set[str]:
        return set()

    class WithSink:
        def __init__(self, every_s: float) -> None:
            self.previews = Sink(every_s)

        def __call__(self, step: int, total: int) -> set[str]:
            return set()

    assert preview_sink(plain) is None
    assert preview_sink(WithSink(0.0)) is None  # 0: off
    on: Any = WithSink(0.5)
    assert preview_sink(on) is on.previews


def test_preview_ids_are_keyed_valid_and_not_image_ids() -> None:
    ident = preview_id("job1", b"k" * 32)
    assert valid_image_id(ident) and ident.endswith(".png")
    assert ident == preview_id("job1", b"k" * 32) != preview_id("job1", b"j" * 32)
    assert ident != image_id("job1", 0, OutputFormat.png, b"k" * 32)
    with pytest.raises(ValueError):
        preview_id("job1", b"")
    assert previews_allowed(0.5, "off")
    assert not previews_allowed(0.0, "off")
    assert not previews_allowed(0.5, "model") and not previews_allowed(0.5, "nudenet")


def test_workers_get_no_preview_interval_with_an_image_checker() -> None:
    from sdserve.config import Settings
    from sdserve.worker.process import worker_config

    assert worker_config(Settings(preview_every_s=0.5)).preview_every_s == 0.5
    assert worker_config(Settings()).preview_every_s == 0.0
    for checker in ("model", "nudenet"):
        settings = Settings(preview_every_s=0.5, image_checker=checker)
        assert worker_config(settings).preview_every_s == 0.0
