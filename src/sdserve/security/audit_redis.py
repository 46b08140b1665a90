"""Redis audit log, for deployments whose job store is Redis.

Layout under SDSERVE_REDIS_PREFIX:
  <p>audit:log      a list of entries (JSON), oldest first
  <p>audit:state    hash: anchor_seq, anchor_hash, head_seq, head_hash, pruned
An append WATCHes the state, so API processes chain their entries one after another
(a lost race retries with the new head).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import redis

from sdserve.security.audit import AuditEntry, AuditLogBase, ChainState


class RedisAuditLog(AuditLogBase):
    def __init__(self, client: Any, prefix: str = "sdserve:") -> None:
        self.client = client
        self.log_key = f"{prefix}audit:log"
        self.state_key = f"{prefix}audit:state"

    @classmethod
    def from_url(cls, url: str, prefix: str = "sdserve:") -> RedisAuditLog:
        client = redis.Redis.from_url(
            url, decode_responses=True, socket_timeout=5, socket_connect_timeout=5
        )
        return cls(client, prefix)

    @staticmethod
    def _parse(raw: dict[str, str]) -> tuple[ChainState, int]:
        if not raw:
            return ChainState(), 0
        st = ChainState(
            int(raw["anchor_seq"]), raw["anchor_hash"], int(raw["head_seq"]), raw["head_hash"]
        )
        return st, int(raw.get("pruned", 0))

    def _append_atomic(self, build: Callable[[ChainState], AuditEntry]) -> AuditEntry:
        while True:
            with self.client.pipeline() as pipe:
                try:
                    pipe.watch(self.state_key)
                    st, pruned = self._parse(pipe.hgetall(self.state_key))
                    entry = build(st)
                    pipe.multi()
                    pipe.rpush(self.log_key, entry.to_json())
                    pipe.hset(
                        self.state_key,
                        mapping={
                            "anchor_seq": st.anchor_seq,
                            "anchor_hash": st.anchor_hash,
                            "head_seq": entry.seq,
                            "head_hash": entry.hash,
                            "pruned": pruned,
                        },
                    )
                    pipe.execute()
                    return entry
                except redis.WatchError:
                    continue

    def _state(self) -> ChainState:
        return self._parse(self.client.hgetall(self.state_key))[0]

    def _scan(self, after_pos: int, limit: int) -> list[tuple[int, AuditEntry]]:
        # Positions count from the first entry ever written, so pruning between two
        # pages does not shift the walk.
        pruned = self._parse(self.client.hgetall(self.state_key))[1]
        start = max(0, after_pos - pruned)
        raw = self.client.lrange(self.log_key, start, start + limit - 1)
        return [(pruned + start + i + 1, AuditEntry.from_json(r)) for i, r in enumerate(raw)]

    def _prune_through(self, entry: AuditEntry) -> int:
        while True:
            with self.client.pipeline() as pipe:
                try:
                    pipe.watch(self.state_key, self.log_key)
                    st, pruned = self._parse(pipe.hgetall(self.state_key))
                    head = [AuditEntry.from_json(r) for r in pipe.lrange(self.log_key, 0, 999)]
                    count = next(
                        (
                            i + 1
                            for i, e in enumerate(head)
                            if (e.seq, e.hash) == (entry.seq, entry.hash)
                        ),
                        0,
                    )
                    if count == 0:
                        pipe.unwatch()
                        return 0
                    pipe.multi()
                    pipe.ltrim(self.log_key, count, -1)
                    pipe.hset(
                        self.state_key,
                        mapping={
                            "anchor_seq": entry.seq,
                            "anchor_hash": entry.hash,
                            "head_seq": st.head_seq,
                            "head_hash": st.head_hash,
                            "pruned": pruned + count,
                        },
                    )
                    pipe.execute()
                    return count
                except redis.WatchError:
                    continue

    def close(self) -> None:
        self.client.close()
