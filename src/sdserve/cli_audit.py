"""`sdserve audit ...`: read and verify the audit log of the configured store (the
SQLite file in the data dir, or Redis) with no service running."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from sdserve.security.audit import AuditLog

audit_app = typer.Typer(help="List and verify the audit log.", no_args_is_help=True)


@contextmanager
def _log() -> Iterator[AuditLog]:
    from sdserve.cli import _settings
    from sdserve.security.audit_factory import build_audit

    log = build_audit(_settings())
    try:
        yield log
    finally:
        log.close()


@audit_app.command("verify")
def verify() -> None:
    """Walk the hash chain; exit 1 naming the first edited, missing or reordered entry."""
    with _log() as log:
        verdict = log.verify()
    if not verdict.ok:
        typer.echo(f"audit log BROKEN at entry {verdict.bad_seq}: {verdict.reason}", err=True)
        raise typer.Exit(1)
    typer.echo(f"audit log ok: {verdict.checked} entries verified")


@audit_app.command("list")
def list_entries(
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's entries")] = None,
    action: Annotated[str | None, typer.Option(help="Only this action (e.g. key.revoke)")] = None,
    after: Annotated[int, typer.Option(help="Entries after this sequence number")] = 0,
    limit: Annotated[int, typer.Option(help="Most to list")] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line")] = False,
) -> None:
    """Entries oldest first: seq, time, actor, tenant, action, target, outcome."""
    from sdserve.security.audit import AuditQuery

    with _log() as log:
        entries = log.query(AuditQuery(tenant=tenant, action=action, after=after, limit=limit))
    for e in entries:
        if as_json:
            typer.echo(json.dumps(e.public(), sort_keys=True))
        else:
            when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(e.at))
            typer.echo(
                f"{e.seq}\t{when}\t{e.actor}\t{e.tenant or '-'}\t{e.action}\t{e.target}\t"
                f"{e.outcome}"
            )
