"""ModelCache tier rules with a recording placement: budgets, LRU order, RAM tier."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from sdserve.engine.model_cache import ModelCache
from sdserve.observability.cache_metrics import CacheMetrics


@dataclass
class Model:
    name: str
    nbytes: int
    where: str = "device"


@dataclass
class Recorder:
    moves: list[tuple[str, str]] = field(default_factory=list)
    releases: int = 0

    def to_device(self, value: Model) -> None:
        value.where = "device"
        self.moves.append((value.name, "device"))

    def to_host(self, value: Model) -> None:
        value.where = "host"
        self.moves.append((value.name, "host"))

    def release(self) -> None:
        self.releases += 1


SIZES = {"a": 40, "b": 40, "c": 40, "big": 90}


def _get(cache: ModelCache[Model], name: str, loads: list[str]) -> Model:
    def load() -> Model:
        loads.append(name)
        return Model(name, SIZES[name])

    return cache.get(name, load, lambda: SIZES[name], lambda m: m.nbytes)


def _tiers(cache: ModelCache[Model]) -> dict[str, str]:
    return {r.name: r.tier for r in cache.residents()}


def test_device_budget_evicts_lru_to_the_ram_tier_then_out() -> None:
    rec, metrics, loads = Recorder(), CacheMetrics(), []
    cache = ModelCache(rec, device_budget=100, host_budget=50, max_device=5, metrics=metrics)
    _get(cache, "a", loads)
    _get(cache, "b", loads)
    assert _tiers(cache) == {"a": "device", "b": "device"}
    _get(cache, "a", loads)  # a is now the most recent: b goes first
    _get(cache, "c", loads)
    assert _tiers(cache) == {"a": "device", "c": "device", "b": "host"}
    assert rec.moves == [("b", "host")] and rec.releases == 0
    _get(cache, "b", loads)  # back from RAM, no load; a (LRU) goes down, c stays
    assert loads == ["a", "b", "c"]
    assert _tiers(cache) == {"c": "device", "b": "device", "a": "host"}
    # big needs 90 on the device: both leave it; the RAM tier (50) keeps one only
    _get(cache, "big", loads)
    assert _tiers(cache) == {"big": "device", "b": "host"}
    assert rec.releases >= 1  # a and c left memory altogether
    assert metrics.value("sdserve_model_loads_total") == 4
    assert metrics.value("sdserve_model_requests_total", {"source": "host"}) == 1
    assert metrics.value("sdserve_model_requests_total", {"source": "device"}) == 1
    assert metrics.value("sdserve_model_evictions_total", {"tier": "device", "to": "host"}) == 4
    gone = metrics.value("sdserve_model_evictions_total", {"tier": "host", "to": "gone"})
    gone += metrics.value("sdserve_model_evictions_total", {"tier": "device", "to": "gone"})
    assert gone == 2


def test_without_a_ram_tier_evicted_models_leave_memory() -> None:
    rec, loads = Recorder(), []
    cache = ModelCache(rec, device_budget=10_000, host_budget=0, max_device=1)
    for name in ("a", "b", "a"):
        _get(cache, name, loads)
    assert loads == ["a", "b", "a"] and rec.moves == [] and rec.releases == 2
    assert _tiers(cache) == {"a": "device"}


def test_one_model_over_the_budget_still_runs_alone() -> None:
    rec, loads = Recorder(), []
    cache = ModelCache(rec, device_budget=50, host_budget=0, max_device=3)
    _get(cache, "a", loads)
    _get(cache, "big", loads)
    assert _tiers(cache) == {"big": "device"}
    _get(cache, "big", loads)
    assert loads == ["a", "big"]


def test_count_limit_and_clear() -> None:
    rec, loads = Recorder(), []
    cache = ModelCache(rec, device_budget=10_000, host_budget=10_000, max_device=2)
    for name in ("a", "b", "c"):
        _get(cache, name, loads)
    assert cache.device_names() == ["b", "c"] and _tiers(cache)["a"] == "host"
    cache.clear()
    assert cache.residents() == [] and rec.releases == 1
    with pytest.raises(ValueError):
        ModelCache(rec, device_budget=1, max_device=0)


def test_a_failed_move_back_drops_the_model() -> None:
    class Failing(Recorder):
        def to_device(self, value: Model) -> None:
            raise MemoryError("out of memory")

    rec, loads = Failing(), []
    cache = ModelCache(rec, device_budget=10_000, host_budget=10_000, max_device=1)
    _get(cache, "a", loads)
    _get(cache, "b", loads)
    assert _tiers(cache) == {"b": "device", "a": "host"}
    with pytest.raises(MemoryError):
        _get(cache, "a", loads)
    assert "a" not in _tiers(cache) and rec.releases == 1
    rec.to_device = Recorder.to_device.__get__(rec)  # type: ignore[method-assign]
    _get(cache, "a", loads)  # loads again from disk
    assert loads == ["a", "b", "a"]
