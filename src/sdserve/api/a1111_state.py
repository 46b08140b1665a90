"""What the A1111 facade remembers between requests, per tenant and per API process:
the options a client set (POST /sdapi/v1/options) and the jobs it started, which
/progress reports on and /interrupt cancels.

A1111 is one process with one global state; sdserve may run many API processes, so a
client that sets options must keep talking to the same one (or send
``override_settings`` with each request, which always works).
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

from starlette.requests import Request

_RECENT_JOBS = 16


class A1111State:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._options: dict[str | None, dict[str, Any]] = {}
        self._jobs: dict[str | None, deque[str]] = {}

    def options(self, tenant: str | None) -> dict[str, Any]:
        with self._lock:
            return dict(self._options.get(tenant, {}))

    def set_options(self, tenant: str | None, updates: dict[str, Any]) -> None:
        with self._lock:
            self._options.setdefault(tenant, {}).update(updates)

    def started(self, tenant: str | None, job_id: str) -> None:
        with self._lock:
            self._jobs.setdefault(tenant, deque(maxlen=_RECENT_JOBS)).append(job_id)

    def recent(self, tenant: str | None) -> list[str]:
        """This tenant's A1111 jobs, newest first."""
        with self._lock:
            return list(reversed(self._jobs.get(tenant, ())))


def state_of(request: Request) -> A1111State:
    state: A1111State | None = getattr(request.app.state, "a1111", None)
    if state is None:
        state = A1111State()
        request.app.state.a1111 = state
    return state
