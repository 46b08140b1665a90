"""LoRA adapters on a loaded model: attach, switch per batch, detach, exactly.

Adapters are attached unmerged through diffusers' LoRA loader on PEFT (which reads
both the diffusers/PEFT key layout and kohya's, converting the latter). The base
weights are never modified: a LoRA layer adds ``scale * B(A(x))`` beside its original
``nn.Linear``, and with adapters disabled it calls that original layer alone, so an
image made without adapters is bit-identical to one made before any adapter was ever
attached (tests/unit/test_lora.py checks it over 50 alternations). Unmerged layers also
make switching cheap: a batch with another adapter set costs a ``set_adapters`` call,
not a weight rewrite.

Attached adapters are kept per model (LRU, ``max_loaded_loras``); the least recently
used is deleted (its tensors freed) when another must be attached. The batch key holds
the adapter set, so every job of a batch wants the same one.
"""

from __future__ import annotations

import hashlib
import logging
import warnings
from collections import OrderedDict
from collections.abc import Callable, Sequence
from contextlib import suppress
from pathlib import Path
from typing import Any

from sdserve.domain.errors import InvalidRequest
from sdserve.observability.cache_metrics import CacheMetrics

log = logging.getLogger(__name__)

Wanted = Sequence[tuple[str, float]]


def adapter_id(name: str) -> str:
    """PEFT keeps adapters in ModuleDicts, whose keys may not contain dots: a file stem
    such as ``style.v2`` becomes a stable identifier."""
    return "lora_" + hashlib.sha256(name.encode()).hexdigest()[:16]


class LoraSet:
    """The adapters attached to one loaded model and the set active now."""

    def __init__(self, max_loaded: int = 8) -> None:
        self.max_loaded = max_loaded
        self.attached: OrderedDict[str, str] = OrderedDict()  # name -> adapter id, LRU first
        self.stamps: dict[str, tuple[int, int]] = {}  # name -> (size, mtime_ns) attached
        self.active: tuple[tuple[str, float], ...] = ()

    def apply(
        self,
        pipe: Any,
        wanted: Wanted,
        resolve: Callable[[str], Path | None],
        metrics: CacheMetrics,
    ) -> None:
        """Make ``wanted`` (name, scale) the pipeline's active adapters (none: off)."""
        wanted = tuple(wanted)
        if wanted == self.active and not any(self._stale(n, resolve) for n, _ in wanted):
            return
        if not wanted:
            if self.attached:
                pipe.disable_lora()
            self.active = ()
            return
        if not hasattr(pipe, "load_lora_weights"):
            raise InvalidRequest.single("loras", "this model's pipeline takes no LoRA adapters")
        if hasattr(getattr(pipe, "unet", None), "_orig_mod"):
            # PEFT rewrites the modules a compiled graph has captured.
            raise InvalidRequest.single(
                "loras", "LoRA adapters are not available with SDSERVE_TORCH_COMPILE=true"
            )
        names = [name for name, _ in wanted]
        for name in names:
            if name in self.attached and self._stale(name, resolve):
                self._detach(pipe, name, metrics)  # the file was replaced: read it again
            if name in self.attached:
                self.attached.move_to_end(name)
            else:
                self._attach(pipe, name, resolve, set(names), metrics)
        pipe.enable_lora()
        pipe.set_adapters([self.attached[n] for n in names], adapter_weights=[s for _, s in wanted])
        self.active = wanted

    def _stale(self, name: str, resolve: Callable[[str], Path | None]) -> bool:
        path = resolve(name)
        return path is None or _stamp(path) != self.stamps.get(name)

    def _attach(
        self,
        pipe: Any,
        name: str,
        resolve: Callable[[str], Path | None],
        keep: set[str],
        metrics: CacheMetrics,
    ) -> None:
        path = resolve(name)
        if path is None:
            raise InvalidRequest.single("loras", f"unknown LoRA adapter {name!r}")
        while len(self.attached) >= self.max_loaded:
            old = next((n for n in self.attached if n not in keep), None)
            if old is None:
                break  # a request's own adapters always fit
            self._detach(pipe, old, metrics)
        from safetensors.torch import load_file

        ident = adapter_id(name)
        state = load_file(str(path))  # safetensors only: nothing is unpickled
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                pipe.load_lora_weights(state, adapter_name=ident)
        except (ValueError, KeyError, RuntimeError) as exc:
            self._forget(pipe, ident)
            raise InvalidRequest.single(
                "loras", f"LoRA adapter {name!r} does not fit this model: {exc}"
            ) from exc
        self.attached[name] = ident
        self.stamps[name] = _stamp(path)
        metrics.lora_loads.inc()
        log.info("attached LoRA adapter %s", name)

    def _detach(self, pipe: Any, name: str, metrics: CacheMetrics) -> None:
        ident = self.attached.pop(name)
        self.stamps.pop(name, None)
        self._forget(pipe, ident)
        self.active = tuple(a for a in self.active if a[0] != name)
        metrics.lora_evictions.inc()
        log.info("detached LoRA adapter %s", name)

    @staticmethod
    def _forget(pipe: Any, ident: str) -> None:
        # Suppressed errors: it never got attached.
        with warnings.catch_warnings(), suppress(ValueError, KeyError, AttributeError):
            warnings.simplefilter("ignore")
            pipe.delete_adapters([ident])


def _stamp(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns
