"""Worker states in Redis: one key per worker, refreshed by ``publish`` and expiring
by itself (``SET ... PX``) when the worker dies, plus a set of ids to find them.

``updated_at`` is Redis's clock (queue/redis_keys.RedisClock), so the freshness an
API node computes does not depend on how far its clock is from the worker's.
"""

from __future__ import annotations

import json
from dataclasses import asdict

import redis

from sdserve.queue.redis_keys import DEFAULT_PREFIX, RedisClock, connect, unavailable_as_503
from sdserve.worker.registry import READY_TTL_S, WorkerState, parse_state

# A state outlives its freshness window a little, so live(ttl) can still judge it.
KEY_TTL_S = 3 * READY_TTL_S


class RedisRegistry:
    def __init__(
        self,
        client: redis.Redis,
        prefix: str = DEFAULT_PREFIX,
        key_ttl: float = KEY_TTL_S,
        *,
        owns_client: bool = False,
    ) -> None:
        self._r = client
        self._ids = prefix + "workers"
        self._prefix = prefix + "worker:"
        self._key_ttl_ms = max(1, round(key_ttl * 1000))
        self._owns_client = owns_client
        self._clock = RedisClock(client)

    @classmethod
    def from_url(cls, url: str, prefix: str = DEFAULT_PREFIX) -> RedisRegistry:
        return cls(connect(url), prefix, owns_client=True)

    @unavailable_as_503
    def publish(self, state: WorkerState) -> None:
        state.updated_at = self._clock.now()
        pipe = self._r.pipeline(transaction=True)
        pipe.set(self._prefix + state.id, json.dumps(asdict(state)), px=self._key_ttl_ms)
        pipe.sadd(self._ids, state.id)
        pipe.execute()

    @unavailable_as_503
    def live(self, ttl: float) -> list[WorkerState]:
        ids = sorted(str(i) for i in self._r.smembers(self._ids))
        if not ids:
            return []
        bodies = self._r.mget([self._prefix + i for i in ids])
        gone = [i for i, body in zip(ids, bodies, strict=True) if body is None]
        if gone:  # expired: their workers stopped publishing
            self._r.srem(self._ids, *gone)
        now = self._clock.now()
        states = [s for b in bodies if b is not None and (s := parse_state(str(b))) is not None]
        return [s for s in states if now - s.updated_at <= ttl]

    @unavailable_as_503
    def remove(self, worker_id: str) -> None:
        pipe = self._r.pipeline(transaction=True)
        pipe.delete(self._prefix + worker_id)
        pipe.srem(self._ids, worker_id)
        pipe.execute()

    def close(self) -> None:
        if self._owns_client:
            self._r.close()
