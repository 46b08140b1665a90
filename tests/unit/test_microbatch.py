"""Fixed-shape UNet micro-batches: guidance pairs, row order, plain pass-through."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import torch

from sdserve.engine.microbatch import groups, guidance_pairs, wrap_unet


class _RecordingUnet:
    """Stands in for a UNet: output row r = sample row r * 2 + its hidden-state row's
    mean, so a row mixed up with another one changes the result."""

    def __init__(self) -> None:
        self.calls: list[list[float]] = []
        self.forward = self._forward

    def _forward(self, sample: torch.Tensor, t: Any, encoder_hidden_states: torch.Tensor) -> Any:
        self.calls.append(sample[:, 0, 0, 0].tolist())
        out = sample * 2 + encoder_hidden_states.mean(dim=(1, 2)).view(-1, 1, 1, 1)
        return SimpleNamespace(sample=out)


def _inputs(rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    sample = torch.arange(rows, dtype=torch.float32).view(rows, 1, 1, 1).expand(rows, 4, 2, 2)
    hidden = torch.arange(rows, dtype=torch.float32).view(rows, 1, 1).expand(rows, 3, 5) * 10
    return sample.contiguous(), hidden.contiguous()


def test_groups_pair_image_rows_of_a_guided_call() -> None:
    assert groups(6, pairs=True) == [[0, 3], [1, 4], [2, 5]]
    assert groups(3, pairs=False) == [[0], [1], [2]]
    assert groups(2, pairs=True) == [[0, 1]]  # a lone image is its own pair
    assert groups(3, pairs=True) == [[0], [1], [2]]  # odd: not a guided call


@pytest.mark.parametrize("pairs", [True, False])
def test_grouped_call_gives_every_row_its_own_result_in_place(pairs: bool) -> None:
    unet = _RecordingUnet()
    reference = _RecordingUnet().forward
    wrap_unet(unet)
    sample, hidden = _inputs(6)
    with guidance_pairs(SimpleNamespace(unet=unet), pairs):
        out = unet.forward(sample, 1, encoder_hidden_states=hidden).sample
    assert torch.equal(out, reference(sample, 1, encoder_hidden_states=hidden).sample)
    expected = [[0.0, 3.0], [1.0, 4.0], [2.0, 5.0]] if pairs else [[float(i)] for i in range(6)]
    assert unet.calls == expected


def test_outside_an_engine_call_the_unet_runs_as_plain_diffusers() -> None:
    unet = _RecordingUnet()
    wrap_unet(unet)
    sample, hidden = _inputs(4)
    unet.forward(sample, 1, encoder_hidden_states=hidden)
    assert unet.calls == [[0.0, 1.0, 2.0, 3.0]]
    with guidance_pairs(SimpleNamespace(unet=unet), True):
        pass
    unet.calls.clear()
    unet.forward(sample, 1, encoder_hidden_states=hidden)  # flag restored after the call
    assert unet.calls == [[0.0, 1.0, 2.0, 3.0]]


def test_wrapping_twice_does_not_nest() -> None:
    unet = _RecordingUnet()
    wrap_unet(unet)
    first = unet.forward
    wrap_unet(unet)
    assert unet.forward is first
