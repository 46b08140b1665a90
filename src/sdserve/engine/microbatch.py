"""Exact micro-batching of the UNet: fixed-shape groups of rows.

Convolutions and GEMMs pick kernels and blocking by batch size, so a row computed
in a batch of 6 differs from the same row alone in the last float bits (measured
~1e-6 on the UNet output), which after 20 steps and the VAE shows up as +-1 pixel
values. A call whose shape never depends on how many jobs share the batch is exact:
image k of a job comes out bit-identical however it was batched.

The cheapest such shape is one *image*: with classifier-free guidance diffusers
stacks the unconditional rows, then the conditional ones (``cat([latents] * 2)``), so
image i owns rows i and n+i of a 2n-row call. Running each such pair together (a
batch of 2, in the same [uncond, cond] order a lone image has) is as exact as one row
at a time and costs one UNet call per step instead of two. Without guidance a group
is a single row. A lone image (or pair) is the group itself and goes straight through.

The engine says per call whether the rows are guidance pairs (``guidance_pairs``):
the UNet cannot tell a 2-row guided call from 2 unguided images. Outside such a call
(a caller using the pipeline directly) the UNet runs as plain diffusers would.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

_PAIRS_ATTR = "_sdserve_guidance_pairs"
_WRAPPED_ATTR = "_sdserve_microbatched"


def groups(rows: int, pairs: bool) -> list[list[int]]:
    """Row indices of each fixed-shape group of a ``rows``-row UNet call."""
    if pairs and rows % 2 == 0:
        n = rows // 2
        return [[i, n + i] for i in range(n)]
    return [[i] for i in range(rows)]


def _take(value: Any, index: list[int], rows: int) -> Any:
    """Rows ``index`` of a batched argument (tensors, and dicts of them, whose first
    dimension is the batch); anything else is shared and passed as is."""
    if isinstance(value, torch.Tensor) and value.ndim > 0 and value.shape[0] == rows:
        if len(index) == 1:
            return value[index[0] : index[0] + 1]
        return value[index]
    if isinstance(value, dict):
        return {k: _take(v, index, rows) for k, v in value.items()}
    return value


def _scatter(parts: list[torch.Tensor], index: list[list[int]], rows: int) -> torch.Tensor:
    """Put each group's output rows back where its input rows came from."""
    flat = [i for group in index for i in group]
    stacked = torch.cat(parts)
    if flat == list(range(rows)):
        return stacked
    order = torch.empty(rows, dtype=torch.long, device=stacked.device)
    order[torch.tensor(flat, device=stacked.device)] = torch.arange(rows, device=stacked.device)
    return stacked.index_select(0, order)


def wrap_unet(unet: Any) -> None:
    """Make ``unet.forward`` run fixed-shape groups (idempotent)."""
    if getattr(unet, _WRAPPED_ATTR, False):
        return
    forward = unet.forward

    def grouped(sample: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        rows = sample.shape[0]
        pairs = getattr(unet, _PAIRS_ATTR, None)
        index = groups(rows, pairs) if pairs is not None else [list(range(rows))]
        if len(index) == 1:
            return forward(sample, *args, **kwargs)
        outs = [
            forward(
                _take(sample, group, rows),
                *(_take(a, group, rows) for a in args),
                **{k: _take(v, group, rows) for k, v in kwargs.items()},
            )
            for group in index
        ]
        first = outs[0]
        if isinstance(first, tuple):
            return (_scatter([o[0] for o in outs], index, rows),)
        first.sample = _scatter([o.sample for o in outs], index, rows)
        return first

    unet.forward = grouped
    setattr(unet, _WRAPPED_ATTR, True)
    setattr(unet, _PAIRS_ATTR, None)


@contextmanager
def guidance_pairs(pipe: Any, on: bool) -> Iterator[None]:
    """For the length of one pipeline call, tell the wrapped UNet whether its rows
    are classifier-free-guidance pairs. Callers hold the engine lock, so no other
    call shares the UNet meanwhile."""
    unet = getattr(pipe, "unet", None)
    # A torch.compile'd UNet wraps the module whose forward we replaced.
    unet = getattr(unet, "_orig_mod", unet)
    if unet is None or not getattr(unet, _WRAPPED_ATTR, False):
        yield
        return
    setattr(unet, _PAIRS_ATTR, on)
    try:
        yield
    finally:
        setattr(unet, _PAIRS_ATTR, None)
