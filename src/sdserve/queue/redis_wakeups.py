"""Wake-ups over Redis pub/sub, so API processes and workers on different machines
hear each other without polling.

Two channels under the key prefix: ``wake:workers`` (a job became claimable) and
``ev:jobs`` (a job changed; the message is its id). Pub/sub keeps nothing for a
subscriber that is not connected, and that is fine: wake-ups are hints, the job
store is the truth, and both sides still poll at ``poll_interval``. A worker stays
subscribed between waits, so a wake-up that arrives while it runs a batch is still
waiting on its socket when it next looks (it then claims at once).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Any

import redis
from redis.client import PubSub

from sdserve.queue.redis_keys import DEFAULT_PREFIX, connect
from sdserve.queue.wakeups import JobWaiters, Role

log = logging.getLogger("sdserve.wakeups")
_LISTEN_SLICE_S = 0.25  # how often the job listener looks at the closed flag
_SUBSCRIBE_TIMEOUT_S = 5.0
_ERRORS = (redis.RedisError, OSError, ValueError)  # ValueError: closed under us


class RedisWakeupBus:
    def __init__(
        self,
        client: redis.Redis,
        prefix: str = DEFAULT_PREFIX,
        role: Role = "api",
        *,
        owns_client: bool = False,
    ) -> None:
        if role not in ("api", "worker"):
            raise ValueError(f"unknown role {role!r}")
        self.role = role
        self._r = client
        self._owns_client = owns_client
        self.work_channel = prefix + "wake:workers"
        self.job_channel = prefix + "ev:jobs"
        self._closed = threading.Event()
        self._jobs = JobWaiters()
        self._lock = threading.Lock()
        self._work_sub: PubSub | None = None
        self._listener: threading.Thread | None = None
        # Set while the job-event listener is subscribed (events before are missed).
        self.listening = threading.Event()
        # Subscribe now: what is published from here on waits for the first wait.
        if role == "worker":
            self._work_subscription()
        else:
            self._ensure_listener()

    @classmethod
    def from_url(cls, url: str, prefix: str = DEFAULT_PREFIX, role: Role = "api") -> RedisWakeupBus:
        return cls(connect(url), prefix, role, owns_client=True)

    # --- sending: never fails a transition ---
    def notify_workers(self) -> None:
        self._publish(self.work_channel, "w")

    def notify_job(self, job_id: str) -> None:
        self._publish(self.job_channel, job_id)

    def _publish(self, channel: str, message: str) -> None:
        try:
            self._r.publish(channel, message)
        except _ERRORS as exc:
            log.debug("wake-up on %s lost: %s", channel, exc)

    def _subscribe(self, channel: str) -> PubSub:
        """A subscription the server has confirmed: anything published after this
        returns reaches it."""
        sub: PubSub = self._r.pubsub()  # type: ignore[no-untyped-call]
        try:
            sub.subscribe(channel)
            deadline = time.monotonic() + _SUBSCRIBE_TIMEOUT_S
            while True:
                reply = sub.get_message(timeout=max(deadline - time.monotonic(), 0.0))
                if reply is not None and reply.get("type") == "subscribe":
                    return sub
                if time.monotonic() >= deadline:
                    raise redis.TimeoutError(f"no confirmation of SUBSCRIBE {channel}")
        except BaseException:
            with contextlib.suppress(*_ERRORS):
                sub.close()
            raise

    # --- worker side ---
    def _work_subscription(self) -> PubSub | None:
        with self._lock:
            if self._work_sub is None:
                try:
                    self._work_sub = self._subscribe(self.work_channel)
                except _ERRORS as exc:
                    log.warning("cannot subscribe to worker wake-ups: %s", exc)
                    return None
            return self._work_sub

    def wait_for_work(self, timeout: float) -> bool:
        """Block on the subscription (no polling loop) until a wake-up or ``timeout``."""
        deadline = time.monotonic() + max(timeout, 0.0)
        while not self._closed.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            sub = self._work_subscription()
            try:
                if sub is None:
                    raise redis.ConnectionError("not subscribed")
                message = sub.get_message(timeout=left)
            except _ERRORS as exc:
                # Redis is away: sit out the wait rather than spin, and subscribe
                # afresh next time (what was published meanwhile is lost: latency).
                log.debug("waiting for work without wake-ups: %s", exc)
                self._drop_work_subscription()
                self._closed.wait(left)
                return False
            if message is not None and message.get("type") == "message":
                self._drain(sub)
                return True
        return False

    def _drop_work_subscription(self) -> None:
        with self._lock:
            sub, self._work_sub = self._work_sub, None
        if sub is not None:
            with contextlib.suppress(*_ERRORS):
                sub.close()

    @staticmethod
    def _drain(sub: PubSub) -> None:
        """A burst of enqueues is one wake-up: the claim that follows sees them all."""
        with contextlib.suppress(*_ERRORS):
            while sub.get_message(timeout=0) is not None:
                pass

    # --- api side ---
    async def wait_job(self, job_id: str, timeout: float) -> bool:
        self._ensure_listener()
        return await self._jobs.wait(job_id, timeout)

    def _ensure_listener(self) -> None:
        with self._lock:
            if self._listener is None and not self._closed.is_set():
                self._listener = threading.Thread(
                    target=self._listen, name="redis-job-events", daemon=True
                )
                self._listener.start()

    def _listen(self) -> None:
        """Job events -> the asyncio waiters of this process (JobWaiters is
        thread-safe: it resolves each future on its own loop)."""
        sub: PubSub | None = None
        while not self._closed.is_set():
            try:
                if sub is None:
                    sub = self._subscribe(self.job_channel)
                    self.listening.set()
                message: dict[str, Any] | None = sub.get_message(timeout=_LISTEN_SLICE_S)
            except _ERRORS as exc:
                log.debug("job events interrupted: %s", exc)
                self.listening.clear()
                if sub is not None:
                    with contextlib.suppress(*_ERRORS):
                        sub.close()
                sub = None
                self._closed.wait(_LISTEN_SLICE_S)
                continue
            if message is not None and message.get("type") == "message":
                self._jobs.wake(str(message["data"]))
        self.listening.clear()
        if sub is not None:
            with contextlib.suppress(*_ERRORS):
                sub.close()

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        self._drop_work_subscription()
        with self._lock:
            listener = self._listener
        if listener is not None:
            listener.join(timeout=_LISTEN_SLICE_S + 1)
        if self._owns_client:
            self._r.close()
