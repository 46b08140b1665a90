"""How much memory a loaded pipeline's weights hold: the bytes of every parameter
and buffer of its torch modules (shared tensors counted once)."""

from __future__ import annotations

from typing import Any

import torch


def pipeline_bytes(pipe: Any) -> int:
    seen: set[int] = set()
    total = 0
    components = getattr(pipe, "components", {})
    for module in components.values():
        if not isinstance(module, torch.nn.Module):
            continue
        for tensor in [*module.parameters(), *module.buffers()]:
            if tensor.device.type == "meta":
                continue
            key = tensor.untyped_storage().data_ptr()
            if key in seen and key != 0:
                continue
            seen.add(key)
            total += tensor.numel() * tensor.element_size()
    return total
