"""Pick the audit log beside the job store the deployment uses (redis imports lazily)."""

from __future__ import annotations

from sdserve.config import Settings
from sdserve.security.audit import AuditLog, MemoryAuditLog


def build_audit(settings: Settings) -> AuditLog:
    if settings.queue_backend == "sqlite":
        from sdserve.security.audit_sqlite import SqliteAuditLog

        path = settings.resolved_database_path
        path.parent.mkdir(parents=True, exist_ok=True)
        return SqliteAuditLog(path)
    if settings.queue_backend == "redis":
        from sdserve.security.audit_redis import RedisAuditLog

        return RedisAuditLog.from_url(settings.redis_url, settings.redis_prefix)
    return MemoryAuditLog()
