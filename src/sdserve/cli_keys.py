"""`sdserve keys ...` and `sdserve tenants ...`: the key store, straight from Settings.

They work on the configured store (the SQLite file in the data dir, or Redis) with no
service running, so the first admin key of a Redis deployment can be made here. A
new key is printed alone on stdout (``KEY=$(sdserve keys create ...)``); what it is
goes to stderr.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from sdserve.security.keys import ApiKey, IssuedKey, Role

if TYPE_CHECKING:
    from sdserve.security.base import KeyStore

T = TypeVar("T")

keys_app = typer.Typer(help="Create, list, revoke and rotate API keys.", no_args_is_help=True)
tenants_app = typer.Typer(help="Tenants and their webhook secrets.", no_args_is_help=True)


@contextmanager
def _store() -> Iterator[KeyStore]:
    from sdserve.cli import _settings
    from sdserve.security.factory import build_keystore

    store = build_keystore(_settings())
    try:
        yield store
    finally:
        store.close()


def _run(fn: Callable[[], T], audit: tuple[str, str, str | None] | None = None) -> T:
    """``fn()``, a refusal (unknown id, last admin key, bad name) as one line, exit 1.
    ``audit``: (action, target, tenant) to record in the audit log, done or refused."""
    from sdserve.domain.errors import SdserveError

    try:
        out = fn()
    except SdserveError as exc:
        if audit is not None:
            _audit(*audit, outcome=exc.type)
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from exc
    if audit is not None:
        _audit(*audit)
    return out


def _audit(action: str, target: str, tenant: str | None, outcome: str = "ok") -> None:
    from sdserve.cli import _settings
    from sdserve.security.audit_factory import build_audit

    log = build_audit(_settings())
    try:
        log.append(action, target, actor="cli", tenant=tenant, outcome=outcome)
    finally:
        log.close()


def _describe(record: ApiKey, now: float) -> str:
    expires = "never" if record.expires_at is None else _when(record.expires_at)
    return (
        f"{record.id}\t{record.tenant}\t{record.role.value}\t{record.state(now).value}\t"
        f"expires {expires}\t{record.name}"
    )


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _issue(issued: IssuedKey) -> None:
    typer.echo(issued.key)
    typer.echo(
        f"created {_describe(issued.record, time.time())}\n"
        "the key above is shown only now: only its hash is stored",
        err=True,
    )


@keys_app.command("create")
def create(
    tenant: Annotated[str, typer.Option(help="Tenant the key acts for")],
    role: Annotated[Role, typer.Option(help="reader, user or admin")] = Role.user,
    name: Annotated[str, typer.Option(help="A label (who or what uses it)")] = "",
    expires_in: Annotated[
        int | None, typer.Option(help="Seconds until it stops working (default: never)")
    ] = None,
) -> None:
    """A new key; printed once (stdout), only its hash is kept."""
    with _store() as store:
        expires_at = time.time() + expires_in if expires_in is not None else None
        _issue(
            _run(
                lambda: store.create(tenant, role, name=name, expires_at=expires_at),
                audit=("key.create", tenant, tenant),
            )
        )


@keys_app.command("list")
def list_keys(
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's keys")] = None,
) -> None:
    """id, tenant, role, state, expiry, name: never a secret."""
    with _store() as store:
        now = time.time()
        for record in _run(lambda: store.list_keys(tenant)):
            typer.echo(_describe(record, now))


@keys_app.command("revoke")
def revoke(key_id: Annotated[str, typer.Argument(help="The key's id (sk-<id>-...)")]) -> None:
    """Stop a key at once (its next request gets 401)."""
    with _store() as store:
        known = store.get(key_id)
        tenant = known.tenant if known is not None else None
        record = _run(lambda: store.revoke(key_id), audit=("key.revoke", key_id[:64], tenant))
        typer.echo(f"revoked {_describe(record, time.time())}")


@keys_app.command("rotate")
def rotate(
    key_id: Annotated[str, typer.Argument(help="The key to replace")],
    overlap_seconds: Annotated[int, typer.Option(help="How long the old key keeps working")] = 3600,
) -> None:
    """A new key (same tenant, role, name); the old one works for the overlap, then 401s."""
    with _store() as store:
        known = store.get(key_id)
        tenant = known.tenant if known is not None else None
        issued = _run(
            lambda: store.rotate(key_id, overlap_seconds),
            audit=("key.rotate", key_id[:64], tenant),
        )
        _issue(issued)
        typer.echo(f"{key_id} stops working at {_when(time.time() + overlap_seconds)}", err=True)


@tenants_app.command("list")
def list_tenants() -> None:
    """Tenants with keys or settings: name, key count, own webhook secret or not."""
    with _store() as store:
        keys = store.list_keys()
        for name in store.tenants():
            tenant = store.tenant(name)
            own = tenant is not None and tenant.webhook_secret is not None
            count = sum(1 for k in keys if k.tenant == name)
            typer.echo(f"{name}\tkeys={count}\twebhook_secret={'own' if own else 'default'}")


@tenants_app.command("webhook-secret")
def webhook_secret(
    tenant: Annotated[str, typer.Argument(help="The tenant")],
    secret: Annotated[
        str | None, typer.Option(help="whsec_... to use (default: a new random one)")
    ] = None,
    clear: Annotated[bool, typer.Option(help="Back to the deployment's secret")] = False,
) -> None:
    """Give a tenant its own webhook signing secret (printed once, stored sealed)."""
    from sdserve.cli import _settings
    from sdserve.security.server_key import load_server_key
    from sdserve.webhooks.signing import generate_secret
    from sdserve.webhooks.tenants import WEBHOOK_SECRET_PURPOSE, check_tenant_secret

    with _store() as store:
        if clear:
            _run(
                lambda: store.set_webhook_secret(tenant, None),
                audit=("tenant.webhook_secret.clear", tenant, tenant),
            )
            typer.echo(f"{tenant}: webhooks signed with the deployment's secret")
            return
        value = _run(lambda: check_tenant_secret(secret, "--secret")) if secret else None
        value = value or generate_secret()
        sealer = _run(lambda: load_server_key(_settings())).sealer
        sealed = sealer.seal(value, WEBHOOK_SECRET_PURPOSE)
        _run(
            lambda: store.set_webhook_secret(tenant, sealed),
            audit=("tenant.webhook_secret.set", tenant, tenant),
        )
        typer.echo(value)
        typer.echo(f"{tenant}: webhooks signed with the secret above from now on", err=True)


@tenants_app.command("erase")
def erase(
    tenant: Annotated[str, typer.Argument(help="The tenant whose data to delete")],
    yes: Annotated[bool, typer.Option("--yes", help="Confirm: this cannot be undone")] = False,
) -> None:
    """Erasure request: cancel the tenant's work, delete its jobs, workflows, inputs and
    images (audited; its keys stay)."""
    from sdserve.api.services import build_services
    from sdserve.cli import _settings
    from sdserve.security.retention import erase_tenant

    if not yes:
        typer.echo(f"error: erasing {tenant!r} deletes all its data; pass --yes", err=True)
        raise typer.Exit(2)
    services = _run(lambda: build_services(_settings()))
    try:
        done = _run(lambda: erase_tenant(services, tenant, "cli"))
    finally:
        services.close()
    typer.echo(
        f"{tenant}: {done.jobs} jobs, {done.workflows} workflows, {done.images} images "
        f"deleted; {done.canceled} canceled"
        + (f"; {done.still_running} still stopping: erase again" if done.still_running else "")
    )
