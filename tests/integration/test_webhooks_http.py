"""Webhook delivery end to end against a real HTTP receiver on 127.0.0.1.

Jobs go through the real MemoryQueue (a canceled job with a callback_url writes an
outbox entry); the dispatcher signs and POSTs them over real sockets. No traffic
leaves 127.0.0.1: other hostnames are mapped to it by a fake resolver.
"""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from standardwebhooks import Webhook

from sdserve.config import Settings
from sdserve.domain.jobs import NewJob
from sdserve.domain.requests import JobSpec, OutputFormat, Priority
from sdserve.queue.base import OutboxEntry
from sdserve.queue.memory import MemoryQueue
from sdserve.webhooks.delivery import Outbox, WebhookDispatcher, WebhookSender
from sdserve.webhooks.guard import AddressPolicy, Resolver
from sdserve.webhooks.signing import generate_secret

SECRET = generate_secret()
T0 = 1_000_000.0  # scheduling clock for run_once; signatures use the wall clock


# --------------------------------------------------------------------------- receiver


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


class Receiver:
    """A real HTTP server in a thread; answers with queued Replies (then 200)."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.requests: list[Received] = []
        self.replies: list[Reply] = []
        self.release = threading.Event()  # cuts any delayed reply short at teardown
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                outer.requests.append(
                    Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                )
                reply = outer.replies.pop(0) if outer.replies else Reply()
                if reply.delay:
                    outer.release.wait(reply.delay)
                self.send_response(reply.status)
                for k, v in reply.headers.items():
                    self.send_header(k, v)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def url(self, host: str = "127.0.0.1", path: str = "/hook", scheme: str = "http") -> str:
        return f"{scheme}://{host}:{self.port}{path}"

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.stop()


# --------------------------------------------------------------------------- helpers


def make_spec() -> JobSpec:
    return JobSpec(
        prompt="a lighthouse",
        negative_prompt="",
        width=64,
        height=64,
        num_inference_steps=1,
        guidance_scale=7.5,
        seed=1,
        num_images=1,
        scheduler="euler_a",
        model="demo",
        priority=Priority.normal,
        output_format=OutputFormat.png,
    )


def outbox_entry(queue: MemoryQueue, url: str) -> OutboxEntry:
    """A job with a callback_url reaches a terminal state -> one outbox entry."""
    job, _ = queue.enqueue(NewJob(spec=make_spec(), callback_url=url), now=T0)
    queue.cancel(job.id, now=T0)
    [entry] = queue.outbox_due(now=T0)
    return entry


def dispatcher(
    queue: Outbox,
    allowlist: list[str] | None = None,
    resolver: Resolver | None = None,
    timeout: float = 2.0,
    max_attempts: int = 8,
    verify: ssl.SSLContext | bool = True,
) -> WebhookDispatcher:
    settings = Settings(
        webhook_secret=SECRET,
        webhook_allowlist=allowlist or [],
        webhook_timeout_seconds=timeout,
        webhook_max_attempts=max_attempts,
    )
    policy = AddressPolicy(settings.webhook_allowlist, resolver=resolver)
    sender = WebhookSender(policy, settings.webhook_timeout_seconds, verify=verify)
    return WebhookDispatcher(queue, sender, SECRET, settings)


def state(queue: MemoryQueue, entry: OutboxEntry) -> OutboxEntry:
    got = queue.outbox_get(entry.id)
    assert got is not None
    return got


def to_loopback(*names: str) -> Resolver:
    def resolve(host: str, port: int) -> list[str]:
        assert host in names, f"test tried to resolve {host!r}"
        return ["127.0.0.1"]

    return resolve


# --------------------------------------------------------------------------- tests


def test_delivery_is_signed_and_verifies(receiver: Receiver) -> None:
    queue = MemoryQueue()
    entry = outbox_entry(queue, receiver.url())
    d = dispatcher(queue, allowlist=["127.0.0.1"])
    assert d.run_once(T0) == 1
    d.close()

    [req] = receiver.requests
    payload = Webhook(SECRET).verify(req.body, req.headers)
    assert payload == entry.payload  # the job's public view, event type included
    assert payload["event"] and payload["id"] == entry.job_id
    assert req.headers["webhook-id"] == entry.id
    assert req.headers["content-type"] == "application/json"
    assert state(queue, entry).status == "delivered"
    assert d.run_once(T0 + 1e6) == 0  # nothing left to send


def test_500_then_retry_with_same_webhook_id(receiver: Receiver) -> None:
    queue = MemoryQueue()
    entry = outbox_entry(queue, receiver.url())
    receiver.replies.append(Reply(500))
    d = dispatcher(queue, allowlist=["127.0.0.0/8"])

    assert d.run_once(T0) == 1
    after = state(queue, entry)
    assert after.status == "pending" and after.attempts == 1
    assert after.last_error == "HTTP 500"
    assert T0 + 4 <= after.next_attempt_at <= T0 + 6  # 5s +-20%
    assert d.run_once(T0 + 1) == 0  # not due yet

    assert d.run_once(T0 + 10) == 1
    d.close()
    assert state(queue, entry).status == "delivered"
    first, second = receiver.requests
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == entry.id
    Webhook(SECRET).verify(second.body, second.headers)


def test_gives_up_after_max_attempts(receiver: Receiver) -> None:
    queue = MemoryQueue()
    entry = outbox_entry(queue, receiver.url())
    receiver.replies += [Reply(503), Reply(503)]
    d = dispatcher(queue, allowlist=["127.0.0.1"], max_attempts=2)
    d.run_once(T0)
    d.run_once(T0 + 100)
    d.close()
    final = state(queue, entry)
    assert final.status == "failed" and final.attempts == 2
    assert final.last_error == "gave up after 2 tries: HTTP 503"


def test_loopback_refused_without_allowlist(receiver: Receiver) -> None:
    queue = MemoryQueue()
    entry = outbox_entry(queue, receiver.url())
    d = dispatcher(queue)
    d.run_once(T0)
    d.close()
    assert receiver.requests == []
    final = state(queue, entry)
    assert final.status == "failed"  # permanent: given up at once
    assert final.last_error is not None and "127.0.0.1" in final.last_error
    assert "loopback" in final.last_error


def test_redirect_is_not_followed(receiver: Receiver) -> None:
    queue = MemoryQueue()
    entry = outbox_entry(queue, receiver.url())
    receiver.replies.append(Reply(302, {"location": receiver.url(path="/elsewhere")}))
    d = dispatcher(queue, allowlist=["127.0.0.1"])
    d.run_once(T0)
    d.close()
    assert [r.path for r in receiver.requests] == ["/hook"]
    after = state(queue, entry)
    assert after.status == "pending" and after.attempts == 1
    assert after.last_error is not None and "302" in after.last_error


def test_timeout_is_respected(receiver: Receiver) -> None:
    queue = MemoryQueue()
    entry = outbox_entry(queue, receiver.url())
    receiver.replies.append(Reply(200, delay=5.0))
    d = dispatcher(queue, allowlist=["127.0.0.1"], timeout=0.3)
    started = time.monotonic()
    d.run_once(T0)
    elapsed = time.monotonic() - started
    receiver.release.set()
    d.close()
    assert elapsed < 2.0
    after = state(queue, entry)
    assert after.status == "pending"
    assert after.last_error is not None and "timed out" in after.last_error


def test_hostname_resolving_to_loopback_refused_at_connect(receiver: Receiver) -> None:
    # "localhost" passes the delivery-time URL check (it is a name); the guard in the
    # transport resolves it, sees 127.0.0.1, and refuses before any connection.
    queue = MemoryQueue()
    entry = outbox_entry(queue, receiver.url(host="localhost"))
    d = dispatcher(queue)
    d.run_once(T0)
    d.close()
    assert receiver.requests == []
    final = state(queue, entry)
    assert final.status == "failed"
    assert final.last_error is not None and "127.0.0.1" in final.last_error
    assert "localhost" in final.last_error


def test_allowlisted_hostname_delivered_with_original_host_header(receiver: Receiver) -> None:
    queue = MemoryQueue()
    outbox_entry(queue, receiver.url(host="localhost"))
    d = dispatcher(queue, allowlist=["localhost"])
    d.run_once(T0)
    d.close()
    [req] = receiver.requests
    assert req.headers["host"] == f"localhost:{receiver.port}"


def test_connects_to_the_checked_address_not_a_second_lookup(receiver: Receiver) -> None:
    # "hooks.test" exists only in the fake resolver: if the transport resolved the
    # name again itself (instead of connecting to the checked IP) this would fail.
    queue = MemoryQueue()
    entry = outbox_entry(queue, receiver.url(host="hooks.test"))
    d = dispatcher(queue, allowlist=["127.0.0.1"], resolver=to_loopback("hooks.test"))
    d.run_once(T0)
    d.close()
    assert state(queue, entry).status == "delivered"
    assert receiver.requests[0].headers["host"] == f"hooks.test:{receiver.port}"


def test_dns_rebinding_second_answer_is_checked(receiver: Receiver) -> None:
    # First answer public (passes the submit-time check), second private: the
    # connect-time check sees the second one and refuses.
    answers = iter([["93.184.215.14"], ["127.0.0.1"]])
    policy = AddressPolicy(resolver=lambda host, port: next(answers))
    policy.resolve_and_check("rebind.test", receiver.port)  # "submit time": fine
    queue = MemoryQueue()
    entry = outbox_entry(queue, receiver.url(host="rebind.test"))
    settings = Settings(webhook_secret=SECRET)
    d = WebhookDispatcher(queue, WebhookSender(policy, 1.0), SECRET, settings)
    d.run_once(T0)
    d.close()
    assert receiver.requests == []
    final = state(queue, entry)
    assert final.status == "failed" and final.last_error is not None
    assert "127.0.0.1" in final.last_error


def test_async_run_delivers_and_stops(receiver: Receiver) -> None:
    queue = MemoryQueue()
    entry = outbox_entry(queue, receiver.url())
    d = dispatcher(queue, allowlist=["127.0.0.1"])
    d.poll_interval = 0.05

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(d.run(stop))
        for _ in range(100):
            if receiver.requests:
                break
            await asyncio.sleep(0.02)
        stop.set()
        await asyncio.wait_for(task, 2.0)

    asyncio.run(main())
    d.close()
    assert state(queue, entry).status == "delivered"


def test_run_forever_stops(receiver: Receiver) -> None:
    queue = MemoryQueue()
    entry = outbox_entry(queue, receiver.url())
    d = dispatcher(queue, allowlist=["127.0.0.1"])
    d.poll_interval = 0.05
    stop = threading.Event()
    t = threading.Thread(target=d.run_forever, args=(stop,))
    t.start()
    deadline = time.monotonic() + 3
    while not receiver.requests and time.monotonic() < deadline:
        time.sleep(0.02)
    stop.set()
    t.join(2.0)
    d.close()
    assert not t.is_alive()
    assert state(queue, entry).status == "delivered"


# --------------------------------------------------------------------------- https


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A throwaway CA and a leaf certificate for "hooks.test"."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI not available")
    d = tmp_path_factory.mktemp("tls")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl(
        "req",
        "-x509",
        *ec,
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=sdserve test CA",
        cwd=d,
    )
    _openssl(
        "req", *ec, "-keyout", "leaf.key", "-out", "leaf.csr", "-subj", "/CN=hooks.test", cwd=d
    )
    (d / "ext.cnf").write_text("subjectAltName=DNS:hooks.test\n")
    _openssl(
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "leaf.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
        cwd=d,
    )
    return d


@pytest.fixture
def tls_receiver(tls_files: Path) -> Iterator[Receiver]:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tls_files / "leaf.pem", tls_files / "leaf.key")
    r = Receiver(tls=ctx)
    yield r
    r.stop()


def _client_ctx(tls_files: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(tls_files / "ca.pem"))


def test_https_pinned_ip_keeps_sni_and_cert_check(tls_receiver: Receiver, tls_files: Path) -> None:
    # Connects to the pinned 127.0.0.1, but TLS verifies the certificate for
    # "hooks.test" (SNI + hostname check use the URL's name, not the IP).
    queue = MemoryQueue()
    entry = outbox_entry(queue, tls_receiver.url(host="hooks.test", scheme="https"))
    d = dispatcher(
        queue,
        allowlist=["127.0.0.1"],
        resolver=to_loopback("hooks.test"),
        verify=_client_ctx(tls_files),
    )
    d.run_once(T0)
    d.close()
    assert state(queue, entry).status == "delivered"
    [req] = tls_receiver.requests
    Webhook(SECRET).verify(req.body, req.headers)


def test_https_certificate_for_another_name_fails(tls_receiver: Receiver, tls_files: Path) -> None:
    queue = MemoryQueue()
    entry = outbox_entry(queue, tls_receiver.url(host="wrong.test", scheme="https"))
    d = dispatcher(
        queue,
        allowlist=["127.0.0.1"],
        resolver=to_loopback("wrong.test"),
        verify=_client_ctx(tls_files),
    )
    d.run_once(T0)
    d.close()
    assert tls_receiver.requests == []
    after = state(queue, entry)
    assert after.status == "pending"  # a transient failure: retried later
    assert after.last_error is not None and "ConnectError" in after.last_error


def test_from_settings_uses_data_dir_secret(receiver: Receiver, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, webhook_allowlist=["127.0.0.1"])
    queue = MemoryQueue()
    outbox_entry(queue, receiver.url())
    d = WebhookDispatcher.from_settings(queue, settings)
    d.run_once(T0)
    d.close()
    secret = (tmp_path / "webhook_secret").read_text().strip()
    [req] = receiver.requests
    Webhook(secret).verify(req.body, req.headers)


def test_retry_survives_restart_with_sqlite(receiver: Receiver, tmp_path: Path) -> None:
    from sdserve.queue.sqlite import SqliteQueue

    db = tmp_path / "sdserve.db"
    queue = SqliteQueue(db)
    job, _ = queue.enqueue(NewJob(spec=make_spec(), callback_url=receiver.url()), now=T0)
    queue.cancel(job.id, now=T0)
    [entry] = queue.outbox_due(now=T0)
    receiver.replies.append(Reply(500))
    d = dispatcher(queue, allowlist=["127.0.0.1"])
    d.run_once(T0)
    d.close()
    queue.close()

    reopened = SqliteQueue(db)  # a "restarted" service picks the retry up
    d = dispatcher(reopened, allowlist=["127.0.0.1"])
    assert d.run_once(T0 + 1) == 0
    assert d.run_once(T0 + 10) == 1
    d.close()
    final = reopened.outbox_get(entry.id)
    reopened.close()
    assert final is not None and final.status == "delivered" and final.attempts == 2
    assert [r.headers["webhook-id"] for r in receiver.requests] == [entry.id, entry.id]
