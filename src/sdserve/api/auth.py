"""Who is calling: one dependency turns the request's API key into a Principal.

Routes declare what they need with ``require_role`` (or the ``Reader`` / ``Writer`` /
``Admin`` aliases); the resolved Principal is also left on ``request.state.principal``
for middleware that runs after routing (rate limits, audit). Everything a principal
reads or writes is scoped by ``principal.owner``; ``can_see`` is the one ownership
test, and a miss is reported as 404, never 403, so ids of other tenants' objects do
not reveal that they exist.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from sdserve.api.services import services_of
from sdserve.domain.errors import Forbidden, Unauthorized
from sdserve.observability import context as log_context
from sdserve.security.keys import KeyState, Role

# The value of WWW-Authenticate on every 401 (RFC 6750).
CHALLENGE = 'Bearer realm="sdserve"'


@dataclass(frozen=True)
class Principal:
    """The caller: a key's tenant and role, or (auth off) the one open tenant."""

    tenant: str | None
    role: Role
    key_id: str | None = None

    @property
    def authenticated(self) -> bool:
        return self.key_id is not None

    @property
    def owner(self) -> str | None:
        """What this caller's jobs, workflows and images are stored under."""
        return self.tenant

    def can_see(self, owner: str | None) -> bool:
        """Whether an object stored under ``owner`` is this caller's. With auth off
        there are no tenants: everything in the job store is visible, as before keys
        existed (images still need their owner; see docs/security.md)."""
        return not self.authenticated or owner == self.tenant


# Auth off: every caller is this one. Admin, so the admin API stays usable to set keys
# up before turning auth on (auth off is only allowed on loopback, or --insecure).
OPEN = Principal(tenant=None, role=Role.admin)


# Declared as FastAPI security schemes so /docs offers "Authorize"; read by hand
# below (auto_error=False) so every refusal is our 401 with our error body.
_BEARER = HTTPBearer(auto_error=False, description="Authorization: Bearer sk-...")
_HEADER = APIKeyHeader(name="X-API-Key", auto_error=False, description="X-API-Key: sk-...")


def _presented_key(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, value = header.strip().partition(" ")
        if scheme.lower() == "basic" and value.strip():
            return basic_password(value.strip())
        if scheme.lower() != "bearer" or not value.strip():
            raise Unauthorized(
                "the Authorization header must be 'Bearer sk-...' "
                "(or HTTP Basic with the key as the password)"
            )
        return value.strip()
    key = request.headers.get("x-api-key")
    return key.strip() if key is not None else None


def basic_password(token: str) -> str:
    """HTTP Basic credentials carry the key as the password (AUTOMATIC1111 clients send
    ``--api-auth user:password``); the user name is not checked."""
    try:
        decoded = base64.b64decode(token, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise Unauthorized("malformed HTTP Basic credentials") from exc
    _, sep, password = decoded.partition(":")
    if not sep or not password:
        raise Unauthorized("HTTP Basic credentials must carry the API key as the password")
    return password


async def current_principal(
    request: Request,
    _bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)] = None,
    _header: Annotated[str | None, Depends(_HEADER)] = None,
) -> Principal:
    """401 ``unauthorized`` without a key, or with one that is malformed, unknown,
    wrong, revoked or expired (the last two say so: only the key's holder sees it)."""
    services = services_of(request)
    if services.settings.auth == "off":
        principal = OPEN
    else:
        presented = _presented_key(request)
        if not presented:
            raise Unauthorized(
                "an API key is required: send 'Authorization: Bearer sk-...' or 'X-API-Key'"
            )
        record = await run_in_threadpool(services.keys.identify, presented)
        if record is None:
            raise Unauthorized("invalid API key")
        state = record.state(services.clock())
        if state is not KeyState.active:
            raise Unauthorized(f"API key {record.id} is {state.value}")
        principal = Principal(tenant=record.tenant, role=record.role, key_id=record.id)
    request.state.principal = principal
    log_context.bind(tenant=principal.owner)  # on this request's log lines
    return principal


def require_role(role: Role) -> Callable[..., Awaitable[Principal]]:
    """A dependency: the caller, if its role includes ``role``; else 403 ``forbidden``."""

    async def dependency(
        principal: Annotated[Principal, Depends(current_principal)],
    ) -> Principal:
        if not principal.role.includes(role):
            raise Forbidden(
                f"this needs a key with the {role.value} role; this key is {principal.role.value}"
            )
        return principal

    dependency.__name__ = f"require_{role.value}"
    return dependency


Reader = Annotated[Principal, Depends(require_role(Role.reader))]
Writer = Annotated[Principal, Depends(require_role(Role.user))]
Admin = Annotated[Principal, Depends(require_role(Role.admin))]
