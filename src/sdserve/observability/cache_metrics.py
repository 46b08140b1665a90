"""Prometheus counters of the worker's caches: models and results.

One registry per ``CacheMetrics`` (nothing global at import time): a worker process
builds one and hands it to its engine and result cache; tests build their own and read
the counts back.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter


class CacheMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self.model_requests = Counter(
            "sdserve_model_requests_total",
            "Models asked of the model cache, by where they were found: device (already "
            "loaded), host (the RAM tier) or disk (a load).",
            ["source"],
            registry=self.registry,
        )
        self.model_loads = Counter(
            "sdserve_model_loads_total",
            "Models loaded from disk (or the hub).",
            registry=self.registry,
        )
        self.evictions = Counter(
            "sdserve_model_evictions_total",
            "Models leaving a tier: from device or host, to host (the RAM tier) or gone "
            "(out of memory).",
            ["tier", "to"],
            registry=self.registry,
        )
        self.lora_loads = Counter(
            "sdserve_lora_loads_total",
            "LoRA adapters attached to a loaded model (read from disk).",
            registry=self.registry,
        )
        self.lora_evictions = Counter(
            "sdserve_lora_evictions_total",
            "LoRA adapters detached from a model (LRU beyond max_loaded_loras).",
            registry=self.registry,
        )
        self.result_hits = Counter(
            "sdserve_result_cache_hits_total",
            "Jobs answered from the result cache, without engine work.",
            registry=self.registry,
        )
        self.result_misses = Counter(
            "sdserve_result_cache_misses_total",
            "Jobs looked up in the result cache and not found (run by the engine).",
            registry=self.registry,
        )

    def value(self, name: str, labels: dict[str, str] | None = None) -> float:
        """A sample's current value (0 when never counted): for tests and benches."""
        got = self.registry.get_sample_value(name, labels or {})
        return float(got or 0.0)
