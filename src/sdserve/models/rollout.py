"""A/B rollout: an alias picks one of its weighted versions.

Sticky choices hash (alias, key) to a point in [0, 1) and walk the cumulative weights
in the registry's order, so the same key keeps its version while the weights stay,
and moving weight from one version to the next moves only the keys in between.
Without a key every request draws anew.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass


@dataclass(frozen=True)
class Rollout:
    alias: str
    versions: tuple[tuple[str, float], ...]  # (model name, weight), registry order
    sticky: bool = True

    def shares(self) -> dict[str, float]:
        total = sum(w for _, w in self.versions)
        return {name: w / total for name, w in self.versions}

    def choose(self, key: str | None) -> str:
        point = sticky_point(self.alias, key) if key and self.sticky else _random_point()
        return pick(self.versions, point)


def sticky_point(alias: str, key: str) -> float:
    digest = hashlib.sha256(f"{alias}\0{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _random_point() -> float:
    return secrets.randbits(53) / 2**53


def pick(versions: tuple[tuple[str, float], ...], point: float) -> str:
    total = sum(w for _, w in versions)
    edge = 0.0
    for name, weight in versions:
        edge += weight / total
        if point < edge and weight > 0:
            return name
    return next(name for name, w in reversed(versions) if w > 0)
