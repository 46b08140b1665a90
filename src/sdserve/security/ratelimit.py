"""Per-key quotas: rates through the ``limits`` library, bounds as plain numbers.

A caller's quota is the settings' defaults, then its tenant's override, then its
key's override (``SDSERVE_QUOTA_OVERRIDES``). Rates (generation requests, images) are
fixed windows: a window opens at the first hit and allows ``amount`` units until it
closes, so "wait until the window resets" (Retry-After) always lets a request through
that fits in the limit. Storage is limits' memory storage in an embedded deployment and
its Redis storage with the redis backend, where several API processes share counters.

Nothing is charged for a refused request: ``RateLimiter.acquire`` tests every rate
first and only then hits them; if another process won a race between the test and the
hit, what was hit is given back. Within one process a lock makes test-and-hit exact.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import limits
from limits import RateLimitItem
from limits.storage import MemoryStorage, RedisStorage, Storage
from limits.strategies import FixedWindowRateLimiter

from sdserve.config import Settings

RATE_FIELDS = ("requests", "images")
BOUND_FIELDS = ("max_queued", "max_pixels", "max_steps")


def parse_rate(name: str, text: str) -> RateLimitItem | None:
    """'60/minute' -> a limits item; '' -> no limit. ValueError names the setting."""
    text = text.strip()
    if not text:
        return None
    try:
        item = limits.parse(text)
    except ValueError:
        item = None
    if item is None or item.amount < 1:
        raise ValueError(f"quota {name}: {text!r} is not a rate such as '60/minute' or '1000/day'")
    return item


@dataclass(frozen=True)
class Quota:
    requests: RateLimitItem | None = None
    images: RateLimitItem | None = None
    max_queued: int = 0
    max_pixels: int = 0
    max_steps: int = 0

    def merged(self, override: Mapping[str, str | int], where: str) -> Quota:
        """This quota with ``override``'s fields replacing its own; ValueError for an
        unknown field or a bad value, naming ``where``."""
        changes: dict[str, object] = {}
        for name, value in override.items():
            if name in RATE_FIELDS:
                changes[name] = parse_rate(f"{where}.{name}", str(value))
            elif name in BOUND_FIELDS:
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise ValueError(f"quota {where}.{name}: must be an integer >= 0 (0: no limit)")
                changes[name] = value
            else:
                known = ", ".join(RATE_FIELDS + BOUND_FIELDS)
                raise ValueError(f"quota {where}: unknown field {name!r} (known: {known})")
        return replace(self, **changes)  # type: ignore[arg-type]


@dataclass(frozen=True)
class QuotaPolicy:
    """The default quota and the overrides, parsed and checked once at start-up."""

    default: Quota
    tenants: dict[str, Quota] = field(default_factory=dict)
    keys: dict[str, Mapping[str, str | int]] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Settings) -> QuotaPolicy:
        default = Quota(
            requests=parse_rate("requests", settings.quota_requests),
            images=parse_rate("images", settings.quota_images),
            max_queued=settings.quota_max_queued,
            max_pixels=settings.quota_max_pixels,
            max_steps=settings.quota_max_steps,
        )
        tenants: dict[str, Quota] = {}
        keys: dict[str, Mapping[str, str | int]] = {}
        for scope, override in settings.quota_overrides.items():
            kind, _, name = scope.partition(":")
            if kind not in ("tenant", "key") or not name:
                raise ValueError(
                    f"quota override {scope!r}: expected 'tenant:<name>' or 'key:<id>'"
                )
            default.merged(override, scope)  # validate now, not at the first request
            if kind == "tenant":
                tenants[name] = default.merged(override, scope)
            else:
                keys[name] = dict(override)
        return cls(default, tenants, keys)

    def for_caller(self, tenant: str | None, key_id: str | None) -> Quota:
        quota = self.tenants.get(tenant, self.default) if tenant is not None else self.default
        if key_id is not None and key_id in self.keys:
            quota = quota.merged(self.keys[key_id], f"key:{key_id}")
        return quota


@dataclass(frozen=True)
class Charge:
    """One rate to consume: ``cost`` units of ``item`` for ``identity``."""

    name: str
    item: RateLimitItem
    identity: str
    cost: int


@dataclass(frozen=True)
class Refusal:
    name: str
    item: RateLimitItem
    remaining: int
    reset_at: float

    def retry_after(self, now: float | None = None) -> int:
        """Whole seconds until the window resets (at least 1: the header is integral)."""
        wait = self.reset_at - (time.time() if now is None else now)
        return max(1, math.ceil(wait))


class RateLimiter:
    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self._limiter = FixedWindowRateLimiter(storage)
        self._lock = threading.Lock()

    def acquire(self, charges: Sequence[Charge]) -> Refusal | None:
        """Consume every charge, or none of them and say which refused."""
        with self._lock:
            for c in charges:
                if not self._limiter.test(c.item, c.identity, cost=c.cost):
                    return self._refusal(c)
            done: list[Charge] = []
            for c in charges:
                ok = self._limiter.hit(c.item, c.identity, cost=c.cost)
                done.append(c)
                if not ok:  # another process got there between test and hit
                    self.refund(done)
                    return self._refusal(c)
            return None

    def refund(self, charges: Sequence[Charge]) -> None:
        """Give back what ``acquire`` took (the request was refused after all)."""
        for c in charges:
            key = c.item.key_for(c.identity)
            # A window that closed meanwhile has nothing to give back; a negative
            # counter would hand the next window extra units.
            if self.storage.get(key) >= c.cost:
                self.storage.incr(key, c.item.get_expiry(), amount=-c.cost)

    def remaining(self, charge: Charge) -> tuple[int, float]:
        stats = self._limiter.get_window_stats(charge.item, charge.identity)
        return stats.remaining, stats.reset_time

    def _refusal(self, c: Charge) -> Refusal:
        remaining, reset = self.remaining(c)
        return Refusal(c.name, c.item, remaining, reset)

    def clear(self, charge: Charge) -> None:
        self._limiter.clear(charge.item, charge.identity)


def memory_limiter() -> RateLimiter:
    return RateLimiter(MemoryStorage())


def build_limiter(settings: Settings) -> RateLimiter:
    """Redis storage when API processes share a Redis (the redis backend), else memory."""
    if settings.queue_backend == "redis":
        storage = RedisStorage(settings.redis_url, key_prefix=f"{settings.redis_prefix}:limits")
        return RateLimiter(storage)
    return memory_limiter()
