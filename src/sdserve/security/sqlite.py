"""SQLite KeyStore: tables in the job store's own file (schema v3, queue/sqlite_schema).

Key writes are rare (operators); reads happen on every request and are one indexed
row. One connection behind a lock is plenty, and writes commit with
``synchronous=FULL``: a key the admin was shown survives a power cut.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sdserve.queue import sqlite_schema as schema
from sdserve.security.base import KeyStoreBase, Tenant
from sdserve.security.keys import ApiKey, Role

_COLUMNS = (
    "id",
    "tenant",
    "role",
    "name",
    "secret_hash",
    "created_at",
    "expires_at",
    "revoked_at",
    "rotated_to",
    "prompt_threshold",
)
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM api_keys"


class SqliteKeyStore(KeyStoreBase):
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = schema.connect(self.path, "FULL")
        schema.migrate(self._conn)

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("SqliteKeyStore is closed")
        return self._conn

    def _load(self, key_id: str) -> ApiKey | None:
        with self._lock:
            row = self._db().execute(f"{_SELECT} WHERE id = ?", (key_id,)).fetchone()
        return _record(row) if row else None

    def _save(self, records: Sequence[ApiKey]) -> None:
        marks = ", ".join("?" for _ in _COLUMNS)
        sql = f"INSERT OR REPLACE INTO api_keys ({', '.join(_COLUMNS)}) VALUES ({marks})"
        with self._lock:
            conn = self._db()
            conn.execute("BEGIN IMMEDIATE")
            try:
                for record in records:
                    conn.execute(sql, _values(record))
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _records(self, tenant: str | None) -> list[ApiKey]:
        with self._lock:
            if tenant is None:
                rows = self._db().execute(_SELECT).fetchall()
            else:
                rows = self._db().execute(f"{_SELECT} WHERE tenant = ?", (tenant,)).fetchall()
        return [_record(r) for r in rows]

    def _load_tenant(self, name: str) -> Tenant | None:
        with self._lock:
            row = (
                self._db()
                .execute(
                    "SELECT name, webhook_secret, updated_at, prompt_threshold FROM tenants"
                    " WHERE name = ?",
                    (name,),
                )
                .fetchone()
            )
        if row is None:
            return None
        return Tenant(
            name=row[0], webhook_secret=row[1], updated_at=row[2], prompt_threshold=row[3]
        )

    def _save_tenant(self, tenant: Tenant) -> None:
        with self._lock:
            self._db().execute(
                "INSERT OR REPLACE INTO tenants (name, webhook_secret, updated_at, "
                "prompt_threshold) VALUES (?, ?, ?, ?)",
                (tenant.name, tenant.webhook_secret, tenant.updated_at, tenant.prompt_threshold),
            )

    def _tenant_names(self) -> set[str]:
        with self._lock:
            return {r[0] for r in self._db().execute("SELECT name FROM tenants")}

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def _values(record: ApiKey) -> list[Any]:
    return [
        record.id,
        record.tenant,
        record.role.value,
        record.name,
        record.secret_hash,
        record.created_at,
        record.expires_at,
        record.revoked_at,
        record.rotated_to,
        record.prompt_threshold,
    ]


def _record(row: sqlite3.Row) -> ApiKey:
    return ApiKey(
        id=row["id"],
        tenant=row["tenant"],
        role=Role(row["role"]),
        name=row["name"],
        secret_hash=row["secret_hash"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        revoked_at=row["revoked_at"],
        rotated_to=row["rotated_to"],
        prompt_threshold=row["prompt_threshold"],
    )
