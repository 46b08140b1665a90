"""Where cached results live: a SQLite file of their own, or Redis (scale-out).

An entry is the image ids of the job that first drew them (the images stay in the
blob store, under the tenant) plus its warnings; it expires after the TTL.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol


@dataclass(frozen=True)
class CachedResult:
    images: list[tuple[str, int]]  # (image id, seed)
    warnings: list[str] = field(default_factory=list)

    def dumps(self) -> str:
        return json.dumps({"images": self.images, "warnings": self.warnings})

    @classmethod
    def loads(cls, text: str | bytes) -> CachedResult:
        data: dict[str, Any] = json.loads(text)
        return cls([(str(i), int(s)) for i, s in data["images"]], list(data["warnings"]))


class ResultStore(Protocol):
    def get(self, key: str, now: float) -> CachedResult | None: ...

    def put(self, key: str, value: CachedResult, now: float, ttl: float) -> None: ...

    def close(self) -> None: ...


class SqliteResultStore:
    """``<data_dir>/result_cache.db``: apart from the job database, so it needs no
    migration and can be deleted at any time."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS results ("
                "key TEXT PRIMARY KEY, value TEXT NOT NULL, expires_at REAL NOT NULL)"
            )

    def get(self, key: str, now: float) -> CachedResult | None:
        with self._lock:
            row = self._db.execute(
                "SELECT value FROM results WHERE key = ? AND expires_at > ?", (key, now)
            ).fetchone()
        return CachedResult.loads(row[0]) if row else None

    def put(self, key: str, value: CachedResult, now: float, ttl: float) -> None:
        with self._lock:
            self._db.execute("DELETE FROM results WHERE expires_at <= ?", (now,))
            self._db.execute(
                "INSERT OR REPLACE INTO results (key, value, expires_at) VALUES (?, ?, ?)",
                (key, value.dumps(), now + ttl),
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()


class RedisResultStore:
    """One string per entry with Redis' own expiry (the TTL runs on Redis' clock)."""

    def __init__(self, client: Any, prefix: str) -> None:
        self._r = client
        self._prefix = prefix

    @classmethod
    def from_url(cls, url: str, prefix: str) -> RedisResultStore:
        import redis

        return cls(redis.Redis.from_url(url), prefix)

    def _key(self, key: str) -> str:
        return f"{self._prefix}result:{key}"

    def get(self, key: str, now: float) -> CachedResult | None:
        raw = self._r.get(self._key(key))
        return CachedResult.loads(raw) if raw is not None else None

    def put(self, key: str, value: CachedResult, now: float, ttl: float) -> None:
        self._r.set(self._key(key), value.dumps(), px=max(1, int(ttl * 1000)))

    def close(self) -> None:
        self._r.close()
