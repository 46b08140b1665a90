"""``RedisQueue.purge`` (queue/purge.py has the rules).

Candidates come from the terminal-status list indexes; each job is removed (or its
prompt blanked, or its images marked expired) in its own WATCHed transaction, so a
dead letter requeued meanwhile is left alone. Outbox entries and workflows have no
owner index: a purge SCANs them, which is fine for a sweeper that runs every few minutes.
"""

from __future__ import annotations

import json
from typing import Any

import redis

from sdserve.domain.jobs import Job, JobStatus
from sdserve.domain.workflows import Workflow
from sdserve.queue.purge import (
    PurgeFilter,
    PurgeResult,
    images_expired,
    job_matches,
    redacted,
    workflow_matches,
)
from sdserve.queue.redis_keys import Keys, idem_field
from sdserve.queue.redis_store import dump_job, load_job

_TERMINAL = [s.value for s in JobStatus if s.terminal]


def _candidates(r: Any, keys: Keys, flt: PurgeFilter) -> list[str]:
    owners = flt.owners
    if owners is None or None in owners:
        index_keys = [keys.index(st, "*", None) for st in _TERMINAL]
    else:
        index_keys = [keys.index(st, "*", o) for st in _TERMINAL for o in owners]
    scored: list[tuple[float, str]] = []
    for key in index_keys:
        scored += [(s, m) for m, s in r.zrange(key, 0, -1, withscores=True)]
    return [m for _, m in sorted(scored)]


def _load(pipe: Any, keys: Keys, job_id: str) -> Job | None:
    spec, body = pipe.hmget(keys.job(job_id), "spec", "b")
    return load_job(spec, body) if spec and body else None


def _purge_job(r: Any, keys: Keys, job_id: str, flt: PurgeFilter) -> Job | None:
    with r.pipeline() as pipe:
        try:
            pipe.watch(keys.job(job_id))
            job = _load(pipe, keys, job_id)
            if job is None or not job_matches(job, flt):
                pipe.unwatch()
                return None
            pipe.multi()
            if flt.redact_prompts:
                pipe.hset(keys.job(job_id), "spec", redacted(job.spec).model_dump_json())
            elif flt.expire_images:
                kept = images_expired(job)
                pipe.hset(
                    keys.job(job_id),
                    mapping={"spec": kept.spec.model_dump_json(), "b": dump_job(kept)},
                )
                pipe.hincrby(keys.job(job_id), "v", 1)  # a write read before this one fails
            else:
                pipe.delete(keys.job(job_id))
                for key in keys.job_indexes(job):
                    pipe.zrem(key, job_id)
                pipe.zrem(keys.dead, job_id)
                if job.idempotency_key is not None:
                    pipe.hdel(keys.idem, idem_field("job", job.owner, job.idempotency_key))
            pipe.execute()
            return job
        except redis.WatchError:
            return None


def purge(r: Any, keys: Keys, flt: PurgeFilter) -> PurgeResult:
    picked: list[Job] = []
    more = False
    for job_id in _candidates(r, keys, flt):
        if len(picked) == flt.limit:
            more = True
            break
        job = _purge_job(r, keys, job_id, flt)
        if job is not None:
            picked.append(job)
    if flt.redact_prompts or flt.expire_images:
        return PurgeResult(picked, [], more)
    workflows: list[str] = []
    for key in r.scan_iter(match=keys.prefix + "wf:*", count=500):
        body = r.hget(key, "b")
        wf = Workflow.model_validate_json(body) if body else None
        if wf is not None and workflow_matches(wf, flt):
            pipe = r.pipeline()
            pipe.delete(key)
            if wf.idempotency_key is not None:
                pipe.hdel(keys.idem, idem_field("wf", wf.owner, wf.idempotency_key))
            pipe.execute()
            workflows.append(wf.id)
    subjects = {j.id for j in picked} | set(workflows)
    if subjects:
        for key in r.scan_iter(match=keys.prefix + "obx:*", count=500):
            if key == keys.outbox_due:
                continue
            body = r.hget(key, "b")
            entry = json.loads(body) if body else None
            if entry is not None and entry.get("job_id") in subjects:
                r.delete(key)
                r.zrem(keys.outbox_due, entry["id"])
    return PurgeResult(picked, workflows, more)
