"""The worker's model cache: a device tier under a byte budget, a host-RAM tier below it.

Models are kept least-recently-used first. When a model must come onto the device and
the device tier is over its budget (bytes) or its count (``max_loaded_models``), the
least recently used models leave it: to the host-RAM tier when there is one (an
accelerator worker; moving back is a copy, not a disk load), else out of memory
altogether. The host tier has its own byte budget and drops its own LRU models the
same way. Every drop ends in ``Placement.release`` (gc + CUDA cache + malloc_trim), so
the bytes really leave the process.

Torch-free: what "moving" and "measuring" mean is the ``Placement``'s business, so the
tier rules are tested with a fake and the real one lives in pipelines.py.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, Literal, Protocol, TypeVar

from sdserve.observability.cache_metrics import CacheMetrics

log = logging.getLogger(__name__)

T = TypeVar("T")
T_contra = TypeVar("T_contra", contravariant=True)
Tier = Literal["device", "host"]


class Placement(Protocol[T_contra]):
    def to_device(self, value: T_contra) -> None: ...

    def to_host(self, value: T_contra) -> None: ...

    def release(self) -> None:
        """Called after a model was dropped: give its memory back."""
        ...


@dataclass
class Entry(Generic[T]):
    name: str
    value: T
    nbytes: int
    tier: Tier


@dataclass(frozen=True)
class Resident:
    """Where one model sits now (for /v1/models and the worker state)."""

    name: str
    tier: Tier
    nbytes: int


class ModelCache(Generic[T]):
    def __init__(
        self,
        placement: Placement[T],
        device_budget: int,
        host_budget: int = 0,
        max_device: int = 1,
        metrics: CacheMetrics | None = None,
    ) -> None:
        if max_device < 1:
            raise ValueError("max_device must be at least 1")
        self.placement = placement
        self.device_budget = device_budget
        self.host_budget = host_budget
        self.max_device = max_device
        self.metrics = metrics or CacheMetrics()
        self._device: OrderedDict[str, Entry[T]] = OrderedDict()  # LRU first
        self._host: OrderedDict[str, Entry[T]] = OrderedDict()
        self._dropped = False  # memory to release once no frame holds the entry

    # --- reading ---

    def device_names(self) -> list[str]:
        # A C-level copy of the keys under the GIL: safe from any thread.
        return list(self._device)

    def residents(self) -> list[Resident]:
        out = [Resident(e.name, "device", e.nbytes) for e in list(self._device.values())]
        return out + [Resident(e.name, "host", e.nbytes) for e in list(self._host.values())]

    def device_bytes(self) -> int:
        return sum(e.nbytes for e in self._device.values())

    def host_bytes(self) -> int:
        return sum(e.nbytes for e in self._host.values())

    # --- the one entry point ---

    def get(
        self,
        name: str,
        load: Callable[[], T],
        estimate: Callable[[], int],
        measure: Callable[[T], int],
    ) -> T:
        """The model ``name`` on the device: already there, brought back from the host
        tier, or built by ``load`` (room is made first for ``estimate()`` bytes, and again
        for its measured size, since two large models may not fit side by side)."""
        hit = self._device.get(name)
        if hit is not None:
            self._device.move_to_end(name)
            self.metrics.model_requests.labels("device").inc()
            return hit.value
        warm = self._host.pop(name, None)
        if warm is not None:
            self._make_room(warm.nbytes)
            self._release()
            try:
                self.placement.to_device(warm.value)
            except BaseException:
                # Half moved (out of memory, say): neither tier can vouch for it.
                self._drop(warm, "host")
                del warm
                self._release()
                raise
            warm.tier = "device"
            self._device[name] = warm
            self.metrics.model_requests.labels("host").inc()
            log.info("model %s back on the device from the RAM tier", name)
            return warm.value
        self._make_room(estimate())
        self._release()
        value = load()
        nbytes = measure(value)
        self.metrics.model_requests.labels("disk").inc()
        self.metrics.model_loads.inc()
        self._device[name] = Entry(name, value, nbytes, "device")
        self._make_room(0, keep=name)
        self._release()
        return value

    def clear(self) -> None:
        self._drop_all()
        self._release()

    def _drop_all(self) -> None:
        while self._device:
            self._drop(self._device.popitem(last=False)[1], "device")
        while self._host:
            self._drop(self._host.popitem(last=False)[1], "host")

    def _release(self) -> None:
        # Called by the public methods after the helpers that held dropped entries
        # returned: only then is the cache's reference the last one gone.
        if self._dropped:
            self._dropped = False
            self.placement.release()

    # --- eviction ---

    def _over(self, extra: int, keep: str | None) -> bool:
        movable = [n for n in self._device if n != keep]
        if not movable:
            return False  # one model alone may exceed the budget: it still must run
        count = len(self._device) + (1 if keep is None else 0)
        return count > self.max_device or self.device_bytes() + extra > self.device_budget

    def _make_room(self, extra: int, keep: str | None = None) -> None:
        while self._over(extra, keep):
            name = next(n for n in self._device if n != keep)
            entry = self._device.pop(name)
            self._demote(entry)

    def _demote(self, entry: Entry[T]) -> None:
        if 0 < entry.nbytes <= self.host_budget:
            while self._host and self.host_bytes() + entry.nbytes > self.host_budget:
                _, old = self._host.popitem(last=False)
                self._drop(old, "host")
            self.placement.to_host(entry.value)
            entry.tier = "host"
            self._host[entry.name] = entry
            self.metrics.evictions.labels("device", "host").inc()
            log.info("model %s moved to the RAM tier", entry.name)
            return
        self._drop(entry, "device")

    def _drop(self, entry: Entry[T], tier: Tier) -> None:
        log.info("unloading model %s (%s tier)", entry.name, tier)
        self.metrics.evictions.labels(tier, "gone").inc()
        self._dropped = True
