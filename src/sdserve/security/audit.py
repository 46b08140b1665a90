"""The audit log: append-only, hash-chained entries of who did what, when, and how it
ended (generations, key and admin actions, deletions).

Each entry carries its sequence number and the hash of the one before it, and its own
hash covers both; so an edited entry no longer matches its hash, and a deleted or
reordered one breaks the sequence or the chain. ``verify`` names the first bad entry.
The state row keeps the head (last seq and hash), which catches a deleted last entry,
and the anchor: the seq and hash of the newest entry that retention pruned, from which
the remaining chain is verified (pruning the oldest entries is allowed; cutting into
the middle is not).

Backends (memory, sqlite in the job store's file, redis) only store and fetch entries
and the state atomically; the chain rules live once here.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

GENESIS = "0" * 64


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    at: float
    actor: str  # a key id, "cli", "system" (the sweeper) or "open" (auth off)
    tenant: str | None  # whose data the action concerns
    action: str  # e.g. job.create, key.revoke, tenant.erase, retention.sweep
    target: str
    outcome: str  # ok, or why not
    details: dict[str, Any]
    prev_hash: str
    hash: str

    def public(self) -> dict[str, Any]:
        return {"object": "audit_entry", **asdict(self)}

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> AuditEntry:
        return cls(**json.loads(text))


def entry_hash(
    seq: int,
    at: float,
    actor: str,
    tenant: str | None,
    action: str,
    target: str,
    outcome: str,
    details: dict[str, Any],
    prev_hash: str,
) -> str:
    body = [seq, at, actor, tenant, action, target, outcome, details, prev_hash]
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def recomputed(e: AuditEntry) -> str:
    return entry_hash(
        e.seq, e.at, e.actor, e.tenant, e.action, e.target, e.outcome, e.details, e.prev_hash
    )


@dataclass(frozen=True)
class ChainState:
    """The anchor (last pruned entry; 0/GENESIS when none) and the head (last entry)."""

    anchor_seq: int = 0
    anchor_hash: str = GENESIS
    head_seq: int = 0
    head_hash: str = GENESIS


@dataclass(frozen=True)
class Verdict:
    ok: bool
    checked: int
    bad_seq: int | None = None
    reason: str = ""


def verify_chain(entries: Iterator[AuditEntry], state: ChainState) -> Verdict:
    """Walk the entries oldest first; the first that breaks the chain is named."""
    seq, prev, checked = state.anchor_seq, state.anchor_hash, 0
    for e in entries:
        if e.seq != seq + 1:
            why = "missing" if e.seq > seq + 1 else "out of order"
            return Verdict(False, checked, seq + 1, f"entry {seq + 1} is {why} (found {e.seq})")
        if e.prev_hash != prev:
            return Verdict(False, checked, e.seq, f"entry {e.seq} does not follow entry {seq}")
        if recomputed(e) != e.hash:
            return Verdict(False, checked, e.seq, f"entry {e.seq} was edited (hash mismatch)")
        seq, prev, checked = e.seq, e.hash, checked + 1
    if seq != state.head_seq or prev != state.head_hash:
        bad = seq + 1 if seq < state.head_seq else seq
        return Verdict(False, checked, bad, f"the log ends at {seq}; its head is {state.head_seq}")
    return Verdict(True, checked)


@dataclass(frozen=True)
class AuditQuery:
    tenant: str | None = None
    action: str | None = None
    after: int = 0  # seq cursor: entries after this one
    limit: int = 100


class AuditLog(Protocol):
    def append(
        self,
        action: str,
        target: str,
        *,
        actor: str,
        tenant: str | None,
        outcome: str = "ok",
        details: dict[str, Any] | None = None,
        now: float | None = None,
    ) -> AuditEntry: ...

    def query(self, q: AuditQuery) -> list[AuditEntry]:
        """Oldest first, after ``q.after``."""
        ...

    def verify(self) -> Verdict: ...

    def prune_before(self, cutoff: float) -> int:
        """Drop the oldest entries older than ``cutoff`` (retention); returns how many."""
        ...

    def close(self) -> None: ...


class AuditLogBase(ABC):
    """The chain rules over a backend's primitives."""

    @abstractmethod
    def _append_atomic(self, build: Callable[[ChainState], AuditEntry]) -> AuditEntry:
        """Under one lock/transaction: read the state, store ``build(state)`` and make
        it the head."""

    @abstractmethod
    def _state(self) -> ChainState: ...

    @abstractmethod
    def _scan(self, after_pos: int, limit: int) -> list[tuple[int, AuditEntry]]:
        """(position, entry) in stored order from after ``after_pos`` (0: the start),
        at most ``limit``. Positions, not seqs: a tampered seq must not steer the walk."""

    @abstractmethod
    def _prune_through(self, entry: AuditEntry) -> int:
        """Delete every entry up to and including ``entry``; make it the anchor."""

    @abstractmethod
    def close(self) -> None: ...

    def append(
        self,
        action: str,
        target: str,
        *,
        actor: str,
        tenant: str | None,
        outcome: str = "ok",
        details: dict[str, Any] | None = None,
        now: float | None = None,
    ) -> AuditEntry:
        at = time.time() if now is None else now
        info = json.loads(json.dumps(details or {}, sort_keys=True))  # plain JSON values

        def build(state: ChainState) -> AuditEntry:
            seq = state.head_seq + 1
            h = entry_hash(seq, at, actor, tenant, action, target, outcome, info, state.head_hash)
            return AuditEntry(
                seq, at, actor, tenant, action, target, outcome, info, state.head_hash, h
            )

        return self._append_atomic(build)

    def iter_all(self, page: int = 500) -> Iterator[AuditEntry]:
        pos = 0
        while True:
            batch = self._scan(pos, page)
            yield from (entry for _, entry in batch)
            if len(batch) < page:
                return
            pos = batch[-1][0]

    def query(self, q: AuditQuery) -> list[AuditEntry]:
        out: list[AuditEntry] = []
        for e in self.iter_all():
            if e.seq <= q.after:
                continue
            if (q.tenant is None or e.tenant == q.tenant) and (
                q.action is None or e.action == q.action
            ):
                out.append(e)
                if len(out) >= q.limit:
                    break
        return out

    def verify(self) -> Verdict:
        return verify_chain(self.iter_all(), self._state())

    def prune_before(self, cutoff: float, chunk: int = 1000) -> int:
        total = 0
        while True:
            last: AuditEntry | None = None
            for i, e in enumerate(self.iter_all()):
                if e.at >= cutoff or i >= chunk:
                    break
                last = e
            if last is None:
                return total
            dropped = self._prune_through(last)
            if dropped == 0:
                return total
            total += dropped


@dataclass
class MemoryAuditLog(AuditLogBase):
    entries: list[AuditEntry] = field(default_factory=list)
    state: ChainState = field(default_factory=ChainState)
    _pruned: int = 0  # positions are list index + 1 + entries pruned so far
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _append_atomic(self, build: Callable[[ChainState], AuditEntry]) -> AuditEntry:
        with self._lock:
            entry = build(self.state)
            self.entries.append(entry)
            self.state = ChainState(
                self.state.anchor_seq, self.state.anchor_hash, entry.seq, entry.hash
            )
            return entry

    def _state(self) -> ChainState:
        return self.state

    def _scan(self, after_pos: int, limit: int) -> list[tuple[int, AuditEntry]]:
        with self._lock:
            start = max(0, after_pos - self._pruned)
            chunk = self.entries[start : start + limit]
            return [(self._pruned + start + i + 1, e) for i, e in enumerate(chunk)]

    def _prune_through(self, entry: AuditEntry) -> int:
        with self._lock:
            dropped = self.entries.index(entry) + 1
            self.entries = self.entries[dropped:]
            self._pruned += dropped
            self.state = ChainState(
                entry.seq, entry.hash, self.state.head_seq, self.state.head_hash
            )
            return dropped

    def close(self) -> None:
        pass
