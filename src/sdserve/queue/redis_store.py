"""How ``RedisQueue`` keeps its data in Redis: keys, the clock, the two Lua persistence
primitives, and the unit of work that turns decided transitions into guarded writes.

Concurrency is optimistic, as with WATCH/MULTI/EXEC but finer grained: a transaction
reads what it needs (remembering each record's version), lets queue/transitions.py
decide, and sends every write in one ``commit`` script call that first re-checks what
the decision read (record versions, the claimed prefix of the ready queue, absent
keys, the queue depth). If anything changed the script writes nothing and the caller
reads again and re-decides. A WATCH on the queue index would make every claim retry
whenever anyone enqueues; these guards only conflict on what a decision depended on.

Layout under the prefix ``P`` (default ``sdserve:``):

- ``P job:<id>``   hash: ``spec`` (immutable), ``b`` the rest of the Job JSON,
                   ``v`` version, ``s`` seq, ``m`` claim meta (while queued)
- ``P seq``        counter: place in line, list order, list cursors
- ``P q``          zset, every queued job, score rank*SEQ_SPAN+seq (claim order)
- ``P q:ready``    zset, the queued jobs a claim may scan (same score)
- ``P q:delayed``  zset, queued jobs not available yet (score available_at); moved to
                   ``q:ready`` by the first claim that finds them due
- ``P q:age``      zset, queued jobs by created_at (the oldest waiting job's age)
- ``P leases``     zset, running jobs by lease_expires_at
- ``P dead``       zset, dead-lettered jobs by finished_at
- ``P cancel``     set, running jobs whose cancel was requested (polled every step)
- ``P ix:<status|*>:<priority|*>[:<owner>]`` zsets by seq: list_jobs pages
- ``P idem``       hash, [kind, owner, key] -> job or workflow id
- ``P wf:<id>``    hash: ``b`` Workflow JSON, ``v`` version
- ``P obx:<id>``   hash: ``b`` OutboxEntry JSON, ``v`` version; ``P obx:due`` zset of
                   pending entries by next_attempt_at
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import redis

from sdserve.domain.jobs import Job, JobStatus
from sdserve.domain.workflows import Workflow
from sdserve.queue.base import OutboxEntry
from sdserve.queue.common import new_outbox_id
from sdserve.queue.redis_keys import Keys, claim_meta, queue_score
from sdserve.queue.redis_known import KnownJobs, Loaded

# One generic guarded write. ARGV: the number of guards, then each guard and each
# write as <argc> <args...>. Guards: ver <key> <version|''>; prefix <zset> <ids...>;
# nx <key>; hnx <hash> <field>; below <zset> <n>. Returns 0 when all writes ran, else
# the 1-based index of the first guard that failed (nothing written).
# Inserted jobs get their number in line here, not in a round trip of their own: a
# first write "\0seq <counter> <count>" takes <count> numbers from the counter, and
# in the writes after it an argument "\0<k>:<offset>" stands for the k-th number
# plus <offset> (queue scores are rank * SEQ_SPAN + seq).
_COMMIT = """
local i = 1
local guards = tonumber(ARGV[i]); i = i + 1
for g = 1, guards do
  local n = tonumber(ARGV[i]); local kind = ARGV[i + 1]; local a = i + 2
  local ok
  if kind == 'ver' then
    ok = (redis.call('HGET', ARGV[a], 'v') or '') == ARGV[a + 1]
  elseif kind == 'prefix' then
    local want = n - 2
    local have = redis.call('ZRANGE', ARGV[a], 0, want - 1)
    ok = #have == want
    for k = 1, want do
      if not ok then break end
      ok = have[k] == ARGV[a + k]
    end
  elseif kind == 'nx' then
    ok = redis.call('EXISTS', ARGV[a]) == 0
  elseif kind == 'hnx' then
    ok = redis.call('HEXISTS', ARGV[a], ARGV[a + 1]) == 0
  elseif kind == 'below' then
    ok = redis.call('ZCARD', ARGV[a]) < tonumber(ARGV[a + 1])
  else
    return redis.error_reply('unknown guard ' .. tostring(kind))
  end
  if not ok then return g end
  i = i + n + 1
end
local seq0 = nil
if ARGV[i + 1] == '\\0seq' then
  local count = tonumber(ARGV[i + 3])
  seq0 = redis.call('INCRBY', ARGV[i + 2], count) - count
  i = i + 4
end
while i <= #ARGV do
  local n = tonumber(ARGV[i])
  if seq0 then
    local args = {}
    for k = 1, n do
      local a = ARGV[i + k]
      if string.byte(a, 1) == 0 then
        local nth, offset = string.match(a, '^%z(%d+):(%d+)$')
        a = string.format('%d', seq0 + tonumber(nth) + tonumber(offset))
      end
      args[k] = a
    end
    redis.call(unpack(args))
  else
    redis.call(unpack(ARGV, i + 1, i + n))
  end
  i = i + n + 1
end
return 0
"""

# Claim candidates: a page of the ready queue with each job's claim meta. The first
# page also reports expired leases (reclaimed before claiming) and first moves due
# delayed jobs to the ready queue (index upkeep only: a job's availability is its
# available_at, which the caller checks again).
# KEYS: q, q:ready, q:delayed, leases. ARGV: job key prefix, now, offset, count.
_CANDIDATES = """
local now, offset, count = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local out = {}
if offset == 0 then
  out = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now, 'LIMIT', 0, 64)
  local due = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, 256)
  for _, id in ipairs(due) do
    local score = redis.call('ZSCORE', KEYS[1], id)
    if score then redis.call('ZADD', KEYS[2], score, id) end
    redis.call('ZREM', KEYS[3], id)
  end
end
table.insert(out, 1, #out)
local ids = redis.call('ZRANGE', KEYS[2], offset, offset + count - 1)
for _, id in ipairs(ids) do
  out[#out + 1] = id
  out[#out + 1] = redis.call('HGET', ARGV[1] .. id, 'm') or ''
end
return out
"""


class Scripts:
    def __init__(self, client: redis.Redis) -> None:
        self.commit = client.register_script(_COMMIT)
        self.candidates = client.register_script(_CANDIDATES)


@dataclass
class UnitOfWork:
    """One optimistic transaction: records read (and their versions), records to
    write, extra guards. ``commit`` sends it all as one script call. With ``known``,
    jobs this process wrote last are taken from there instead of read (see KnownJobs)
    and ``commit`` keeps it up to date."""

    client: redis.Redis
    keys: Keys
    scripts: Scripts
    ts: float
    known: KnownJobs | None = None
    _jobs: dict[str, tuple[Loaded, Job | None, Job | None]] = field(default_factory=dict)
    _workflows: dict[str, tuple[Loaded, Workflow | None, Workflow | None]] = field(
        default_factory=dict
    )
    _guards: list[list[Any]] = field(default_factory=list)
    _writes: list[list[Any]] = field(default_factory=list)
    _from_known: set[str] = field(default_factory=set)
    _inserts: int = 0

    # --- reads (cached: a record is read once per transaction) ---
    def jobs(self, job_ids: Sequence[str], known: bool = True) -> dict[str, Job]:
        """Current state (as this transaction leaves it) of the jobs that exist;
        ``known=False`` reads them from Redis even when this process knows a copy."""
        missing = [i for i in dict.fromkeys(job_ids) if i not in self._jobs]
        if self.known is not None and known and missing:
            for job_id in missing:
                if (hit := self.known.get(job_id)) is not None:
                    self._jobs[job_id] = (hit[0], hit[1], hit[1])
                    self._from_known.add(job_id)
            missing = [i for i in missing if i not in self._jobs]
        fields = ("spec", "b", "v", "s")
        if len(missing) == 1:  # the common case; a pipeline costs more client time
            rows = [self.client.hmget(self.keys.job(missing[0]), fields)]
        elif missing:
            pipe = self.client.pipeline(transaction=False)
            for job_id in missing:
                pipe.hmget(self.keys.job(job_id), fields)
            rows = pipe.execute()
        for job_id, (spec, body, ver, seq) in zip(missing, rows if missing else [], strict=True):
            job = load_job(spec, body) if spec and body else None
            self._jobs[job_id] = (Loaded(text(ver or ""), int(seq or 0)), job, job)
        return {i: cur for i in job_ids if (cur := self._jobs[i][2]) is not None}

    def job(self, job_id: str) -> Job | None:
        return self.jobs([job_id]).get(job_id)

    def workflow(self, workflow_id: str) -> Workflow | None:
        if workflow_id not in self._workflows:
            body, ver = self.client.hmget(self.keys.workflow(workflow_id), "b", "v")
            wf = Workflow.model_validate_json(body) if body else None
            self._workflows[workflow_id] = (Loaded(str(ver or "")), wf, wf)
        return self._workflows[workflow_id][2]

    # --- writes ---
    def put_job(self, job: Job) -> None:
        loaded, old, _ = self._jobs[job.id]
        self._jobs[job.id] = (loaded, old, job)

    def insert_job(self, job: Job) -> None:
        self._inserts += 1
        self._jobs[job.id] = (Loaded("", -self._inserts), None, job)

    def put_workflow(self, wf: Workflow) -> None:
        loaded, old, _ = self._workflows.get(wf.id, (Loaded(""), None, None))
        self._workflows[wf.id] = (loaded, old, wf)

    def add_outbox(self, subject_id: str, url: str, payload: dict[str, Any]) -> None:
        entry = OutboxEntry(
            id=new_outbox_id(),
            job_id=subject_id,
            url=url,
            payload=payload,
            attempts=0,
            next_attempt_at=self.ts,
            created_at=self.ts,
        )
        self.put_outbox(entry, "")

    def put_outbox(self, entry: OutboxEntry, version: str) -> None:
        key = self.keys.outbox(entry.id)
        self.guard("ver", key, version)
        self.write("HSET", key, "b", json.dumps(asdict(entry)), "v", _bump(version))
        if entry.status == "pending":
            self.write("ZADD", self.keys.outbox_due, entry.next_attempt_at, entry.id)
        else:
            self.write("ZREM", self.keys.outbox_due, entry.id)

    def guard(self, kind: str, *args: Any) -> int:
        """Add a guard; returns the index ``commit`` reports if it fails."""
        self._guards.append([kind, *args])
        return len(self._guards)

    def write(self, *command: Any) -> None:
        self._writes.append(list(command))

    # --- commit ---
    def commit(self) -> int:
        """0 when written; else the 1-based index of the guard that failed."""
        guards = list(self._guards)
        writes = list(self._writes)
        for job_id, (loaded, old, new) in self._jobs.items():
            if new is not None and new is not old:
                guards.append(["ver", self.keys.job(job_id), loaded.version])
                writes.extend(_job_writes(self.keys, old, new, loaded, self.ts))
            elif job_id in self._from_known:  # a decision not to write is checked too
                guards.append(["ver", self.keys.job(job_id), loaded.version])
        for wf_id, (loaded, old_wf, new_wf) in self._workflows.items():
            if new_wf is not None and new_wf is not old_wf:
                key = self.keys.workflow(wf_id)
                guards.append(["ver", key, loaded.version])
                writes.append(
                    ["HSET", key, "b", new_wf.model_dump_json(), "v", _bump(loaded.version)]
                )
        if not writes and not self._from_known:
            return 0
        if self._inserts:
            writes.insert(0, ["\0seq", self.keys.seq, self._inserts])
        argv: list[Any] = [len(guards)]
        for command in (*guards, *writes):
            argv.append(len(command))
            argv.extend(command)
        failed = int(self.scripts.commit(keys=[], args=argv))
        if self.known is not None:
            self._update_known(failed)
        return failed

    def _update_known(self, failed: int) -> None:
        assert self.known is not None
        if failed:  # some copy may be stale: the retry reads these jobs afresh
            self.known.forget(self._jobs)
            return
        for job_id, (loaded, old, new) in self._jobs.items():
            if new is None or new is old:
                continue
            if new.status is JobStatus.running:
                written = Loaded(str(_bump(loaded.version)), loaded.seq)
                self.known.remember(job_id, written, new)
            else:  # nothing of this worker's left to do with it
                self.known.forget([job_id])


def _bump(version: str) -> int:
    return int(version or 0) + 1


def _job_writes(
    keys: Keys, old: Job | None, new: Job, loaded: Loaded, ts: float
) -> Iterable[list[Any]]:
    """Store ``new`` over ``old``, touching only the indexes whose membership changes
    (fewer arguments to send is most of a claim's cost)."""
    jid = new.id

    def seq(offset: int = 0) -> int | str:
        """The job's number in line plus ``offset``, or a stand-in the commit script
        replaces with it (a job inserted by this commit has none yet)."""
        k = loaded.seq
        return offset + k if k >= 0 else f"\0{-k}:{offset}"

    record: list[Any] = ["HSET", keys.job(jid), "b", dump_job(new), "v", _bump(loaded.version)]
    if old is None:  # immutable from here on
        record += ["s", seq(), "spec", new.spec.model_dump_json()]
    if new.status is JobStatus.queued:  # only claims read it
        record += ["m", claim_meta(new)]
    yield record
    was = old.status if old is not None else None
    if new.status is JobStatus.queued:
        score = seq(queue_score(new.spec.priority.rank, 0))
        yield ["ZADD", keys.queued, score, jid]
        yield ["ZADD", keys.age, new.created_at, jid]
        # A queued job is in exactly one of q:ready and q:delayed (a new one in neither).
        if new.available_at > ts:
            yield ["ZADD", keys.delayed, new.available_at, jid]
            if old is not None:
                yield ["ZREM", keys.ready, jid]
        else:
            yield ["ZADD", keys.ready, score, jid]
            if old is not None:
                yield ["ZREM", keys.delayed, jid]
    elif was is JobStatus.queued:
        # A claim takes jobs from q:ready only, so a claimed one is not in q:delayed.
        claimed = new.status is JobStatus.running
        for key in (keys.queued, keys.age, keys.ready, *(() if claimed else (keys.delayed,))):
            yield ["ZREM", key, jid]
    if new.status is JobStatus.running and new.lease_expires_at is not None:
        if old is None or new.lease_expires_at != old.lease_expires_at:
            yield ["ZADD", keys.leases, new.lease_expires_at, jid]
    elif was is JobStatus.running:
        yield ["ZREM", keys.leases, jid]
    cancel = new.status is JobStatus.running and new.cancel_requested
    if cancel:
        yield ["SADD", keys.cancel, jid]
    elif old is not None and old.cancel_requested:
        yield ["SREM", keys.cancel, jid]
    if new.status is JobStatus.failed and new.dead_lettered:
        yield ["ZADD", keys.dead, new.finished_at or ts, jid]
    elif old is not None and old.dead_lettered:
        yield ["ZREM", keys.dead, jid]
    if old is None:
        for key in keys.job_indexes(new):
            yield ["ZADD", key, seq(), jid]
    elif old.status is not new.status:
        for key in keys.job_indexes(old, status_only=True):
            yield ["ZREM", key, jid]
        for key in keys.job_indexes(new, status_only=True):
            yield ["ZADD", key, seq(), jid]


def dump_job(job: Job) -> str:
    """A job's mutable part; the spec is stored once, beside it (it never changes)."""
    return job.model_dump_json(exclude={"spec"})


def load_job(spec: str | bytes, body: str | bytes) -> Job:
    return Job.model_validate_json('{"spec":' + text(spec) + "," + text(body)[1:])


def text(value: str | bytes) -> str:
    """Replies are text (decode_responses=True); this keeps type checkers sure of it."""
    return value if isinstance(value, str) else value.decode()
