"""Webhook delivery: a guarded HTTP sender and the outbox dispatcher.

The queue writes one outbox entry per terminal job (in the same transaction as the
transition), so a delivery survives restarts; the dispatcher drains due entries,
signs and POSTs them, and records the outcome back in the outbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import random
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import httpcore
import httpx

from sdserve.config import Settings
from sdserve.domain.errors import InvalidRequest
from sdserve.queue.base import OutboxEntry
from sdserve.security.server_key import SealError
from sdserve.webhooks import backoff
from sdserve.webhooks.guard import AddressPolicy, DestinationRefused, validate_callback_url
from sdserve.webhooks.signing import load_or_create_secret, sign
from sdserve.webhooks.tenants import Delivery, DeliveryResolver

log = logging.getLogger(__name__)

USER_AGENT = "sdserve-webhooks/1"
MAX_ERROR_CHARS = 500


# --------------------------------------------------------------------------- transport


class GuardedBackend(httpcore.NetworkBackend):
    """An httpcore network backend that only opens sockets to policy-checked IPs.

    httpcore asks it for a TCP connection to (hostname, port); it resolves the name
    once, checks every answer, and connects to the checked IP itself. TLS is layered
    on afterwards by httpcore with ``server_hostname`` = the URL's hostname, so SNI
    and certificate verification still use the original name, and httpx sends the
    original Host header: only the socket address is pinned.
    """

    def __init__(self, policy: AddressPolicy) -> None:
        self.policy = policy
        self._inner = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        try:
            addrs = self.policy.resolve_and_check(host, port)
        except DestinationRefused:
            raise
        except (OSError, UnicodeError) as exc:
            raise httpcore.ConnectError(f"cannot resolve {host!r}: {exc}") from exc
        last: Exception | None = None
        for addr in addrs:  # like create_connection: first address that answers wins
            try:
                return self._inner.connect_tcp(
                    str(addr), port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        assert last is not None  # resolve_and_check never returns an empty list
        raise last

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        raise DestinationRefused("unix sockets are not webhook destinations")

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class PinnedTransport(httpx.HTTPTransport):
    """httpx's own transport (so request/response handling and exception mapping
    stay httpx's), with its connection pool swapped for one that connects through
    ``GuardedBackend``. No proxy and no environment (trust_env=False): a proxy
    would make the checked address the proxy's, not the destination's."""

    def __init__(self, policy: AddressPolicy, verify: ssl.SSLContext | str | bool = True) -> None:
        super().__init__(trust_env=False)
        ssl_context = httpx.create_ssl_context(verify=verify, trust_env=False)
        self._pool = httpcore.ConnectionPool(
            ssl_context=ssl_context,
            network_backend=GuardedBackend(policy),
            max_connections=20,
            max_keepalive_connections=5,
            keepalive_expiry=5.0,
        )


# --------------------------------------------------------------------------- sender


@dataclass(frozen=True)
class DeliveryOutcome:
    ok: bool
    status: int | None = None
    error: str | None = None
    refused: bool = False  # permanent: the address policy or URL rules refused it


class WebhookSender:
    """POSTs one signed body; never follows redirects (a 3xx is a failed try: the
    Location could point anywhere, including somewhere the guard would refuse)."""

    def __init__(
        self,
        policy: AddressPolicy,
        timeout: float = 5.0,
        verify: ssl.SSLContext | str | bool = True,
        user_agent: str = USER_AGENT,
    ) -> None:
        self.policy = policy
        self.timeout = timeout
        self._client = httpx.Client(
            transport=PinnedTransport(policy, verify=verify),
            timeout=httpx.Timeout(timeout),
            follow_redirects=False,
            trust_env=False,
            headers={"user-agent": user_agent},
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> WebhookSender:
        return cls(AddressPolicy(settings.webhook_allowlist), settings.webhook_timeout_seconds)

    def send(self, url: str, body: bytes, headers: dict[str, str]) -> DeliveryOutcome:
        try:
            # URL rules again: the entry may predate them or come from another writer.
            validate_callback_url(url, self.policy, resolve=False)
        except InvalidRequest as exc:
            return DeliveryOutcome(False, error=_clip(exc.message), refused=True)
        try:
            # Stream and never read the body: only the status matters, and a receiver
            # that trickles a huge body must not keep us busy.
            with self._client.stream("POST", url, content=body, headers=headers) as resp:
                status = resp.status_code
                location = resp.headers.get("location")
        except DestinationRefused as exc:
            return DeliveryOutcome(False, error=_clip(exc.reason), refused=True)
        except httpx.TimeoutException as exc:
            kind = type(exc).__name__
            return DeliveryOutcome(False, error=f"timed out after {self.timeout:g}s ({kind})")
        except httpx.HTTPError as exc:
            return DeliveryOutcome(False, error=_clip(f"{type(exc).__name__}: {exc}"))
        if 200 <= status < 300:
            return DeliveryOutcome(True, status)
        if 300 <= status < 400:
            where = f" to {location}" if location else ""
            return DeliveryOutcome(
                False, status, _clip(f"HTTP {status}: redirect{where} not followed")
            )
        return DeliveryOutcome(False, status, f"HTTP {status}")

    def close(self) -> None:
        self._client.close()


def _traceparent(payload: dict[str, Any]) -> str | None:
    params = payload.get("parameters")
    trace = params.get("trace") if isinstance(params, dict) else None
    value = trace.get("traceparent") if isinstance(trace, dict) else None
    return value if isinstance(value, str) else None


def _clip(text: str) -> str:
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 3] + "..."


# --------------------------------------------------------------------------- dispatcher


class Outbox(Protocol):
    """The part of JobQueue the dispatcher uses (every JobQueue is one)."""

    def outbox_claim(
        self, now: float | None = None, limit: int = 50, lease_seconds: float = 60.0
    ) -> list[OutboxEntry]: ...

    def outbox_delivered(self, entry_id: str, now: float | None = None) -> None: ...

    def outbox_retry(self, entry_id: str, next_attempt_at: float, error: str) -> None: ...

    def outbox_give_up(self, entry_id: str, error: str) -> None: ...


def encode_payload(payload: dict[str, object]) -> bytes:
    """The exact bytes signed and sent: the payload (the job's public view, event type
    included, links made absolute by the resolver) serialized as is."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


class WebhookDispatcher:
    """Drains the durable outbox: due entries are signed, sent, and recorded as
    delivered, rescheduled (backoff + jitter) or given up.

    Delivery is at-least-once: ``webhook-id`` is the outbox entry id on every try of
    that entry, so receivers dedupe on it. Run one dispatcher per outbox (the outbox
    API has no claim, so two dispatchers could both send an entry).
    """

    def __init__(
        self,
        queue: Outbox,
        sender: WebhookSender,
        secret: str,
        settings: Settings,
        *,
        batch_size: int = 50,
        concurrency: int = 4,
        poll_interval: float = 1.0,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.time,
        resolver: DeliveryResolver | None = None,
    ) -> None:
        self.queue = queue
        self.sender = sender
        self.secret = secret
        # Opens sealed URLs, picks the tenant's secret, makes links absolute. Without
        # one, entries are sent as stored and signed with ``secret``.
        self.resolver = resolver
        self.max_attempts = settings.webhook_max_attempts
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.rng = rng or random.Random()
        # Wall clock for the signature timestamp: receivers check it against their own
        # clock, so it must be real time even when run_once is given a test ``now``.
        self.clock = clock
        self._executor = ThreadPoolExecutor(max(1, concurrency), "webhook-send")
        # Claimed entries stay hidden from other dispatchers while this one works
        # through the batch: every send may take the full timeout, concurrency at a time.
        rounds = math.ceil(batch_size / max(1, concurrency))
        self.claim_lease = 2 * settings.webhook_timeout_seconds * rounds + 30

    @classmethod
    def from_settings(cls, queue: Outbox, settings: Settings) -> WebhookDispatcher:
        """What the service starts: secret from settings (or the data dir), sender
        with the configured allowlist and timeout."""
        secret = load_or_create_secret(settings)
        return cls(queue, WebhookSender.from_settings(settings), secret, settings)

    def deliver(self, entry: OutboxEntry) -> DeliveryOutcome:
        if self.resolver is None:
            delivery = Delivery(entry.url, entry.payload, self.secret)
        else:
            try:
                delivery = self.resolver.resolve(entry)
            except SealError as exc:  # no retry opens it: another secret key sealed it
                return DeliveryOutcome(False, error=_clip(exc.message), refused=True)
        body = encode_payload(delivery.payload)
        headers = sign(delivery.secret, entry.id, self.clock(), body)
        headers["content-type"] = "application/json"
        traceparent = _traceparent(delivery.payload)
        if traceparent is not None:  # the receiver joins the trace the job came from
            headers["traceparent"] = traceparent
        return self.sender.send(delivery.url, body, headers)

    def run_once(self, now: float | None = None) -> int:
        """Try every entry due at ``now``; returns how many were tried."""
        now = time.time() if now is None else now
        entries = self.queue.outbox_claim(now, self.batch_size, self.claim_lease)
        if not entries:
            return 0
        # Sends run in parallel (one slow receiver must not hold up the rest); the
        # outbox is written from this thread only.
        outcomes = list(self._executor.map(self._safe_deliver, entries))
        for entry, outcome in zip(entries, outcomes, strict=True):
            self._record(entry, outcome, now)
        return len(entries)

    def _safe_deliver(self, entry: OutboxEntry) -> DeliveryOutcome:
        try:
            return self.deliver(entry)
        except Exception as exc:  # a bug here must not stall the whole batch
            log.exception("webhook %s: unexpected error", entry.id)
            return DeliveryOutcome(False, error=_clip(f"{type(exc).__name__}: {exc}"))

    def _record(self, entry: OutboxEntry, outcome: DeliveryOutcome, now: float) -> None:
        tried = entry.attempts + 1
        if outcome.ok:
            log.info(
                "webhook %s for %s delivered (HTTP %s)", entry.id, entry.job_id, outcome.status
            )
            self.queue.outbox_delivered(entry.id, now)
            return
        error = outcome.error or "delivery failed"
        if outcome.refused:
            log.warning("webhook %s for %s refused: %s", entry.id, entry.job_id, error)
            self.queue.outbox_give_up(entry.id, error)
        elif tried >= self.max_attempts:
            log.warning(
                "webhook %s for %s: giving up after %d tries: %s",
                entry.id,
                entry.job_id,
                tried,
                error,
            )
            self.queue.outbox_give_up(entry.id, f"gave up after {tried} tries: {error}")
        else:
            delay = backoff.schedule(tried, self.rng)
            log.info(
                "webhook %s for %s failed (try %d, next in %.0fs): %s",
                entry.id,
                entry.job_id,
                tried,
                delay,
                error,
            )
            self.queue.outbox_retry(entry.id, now + delay, error)

    def _tick(self) -> int:
        try:
            return self.run_once()
        except Exception:  # e.g. the database is briefly locked: log, try again later
            log.exception("webhook dispatcher pass failed")
            return 0

    def run_forever(self, stop: threading.Event) -> None:
        """Blocking loop for a thread; returns soon after ``stop`` is set."""
        while not stop.is_set():
            if self._tick() < self.batch_size:  # a full batch: more may be due now
                stop.wait(self.poll_interval)

    async def run(self, stop: asyncio.Event) -> None:
        """The same loop for an asyncio service; the blocking work runs in a thread."""
        while not stop.is_set():
            if await asyncio.to_thread(self._tick) < self.batch_size:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.poll_interval)

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        self.sender.close()
