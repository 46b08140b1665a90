"""Redis for tests: the machine's shared redis-server with a unique key prefix per test,
or a private redis-server process for tests that kill, restart or reconfigure it.

Fixtures (imported by tests/conftest.py):
- ``redis_url``: the shared server (127.0.0.1:6379, or SDSERVE_TEST_REDIS_URL); when
  it is not running, a private one started once per session; skipped without either.
- ``redis_prefix``: a fresh key prefix on ``redis_url``; its keys are deleted after.
- ``private_redis``: a factory of private servers (``RedisServer``) on free ports,
  optionally with AOF, stopped after the test.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from sdserve.testing import free_port

SHARED_URL = os.environ.get("SDSERVE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


class RedisServer:
    """A private ``redis-server`` on 127.0.0.1:<free port> with its data in ``workdir``.

    ``appendonly``: AOF on (``appendfsync`` always | everysec | no), so a restart
    (even after SIGKILL) reloads the data; off, a restart starts empty (no RDB
    snapshots either). ``restart`` keeps the port and the data directory."""

    def __init__(
        self,
        workdir: Path,
        *,
        appendonly: bool = False,
        appendfsync: str = "everysec",
        port: int | None = None,
    ) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.appendonly = appendonly
        self.appendfsync = appendfsync
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self, **kwargs: Any) -> redis.Redis:
        return redis.Redis.from_url(self.url, decode_responses=True, **kwargs)

    def start(self, timeout: float = 20.0) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed")
        cmd = [
            binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.workdir),
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", self.appendfsync,
            "--logfile", str(self.workdir / "redis.log"),
        ]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        probe = self.client(socket_timeout=1)
        try:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"redis-server exited: {self.log_tail()}")
                try:
                    if probe.ping():
                        return self
                except redis.ConnectionError:
                    pass
                except redis.BusyLoadingError:
                    pass  # replaying the AOF
                if time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start: {self.log_tail()}")
                time.sleep(0.02)
        finally:
            probe.close()

    def kill(self) -> None:
        """SIGKILL: no shutdown save, no final fsync (what a crash looks like)."""
        self._signal(signal.SIGKILL)

    def stop(self) -> None:
        self._signal(signal.SIGTERM)

    def restart(self) -> RedisServer:
        self.stop()
        return self.start()

    def _signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None

    def log_tail(self) -> str:
        path = self.workdir / "redis.log"
        return path.read_text()[-2000:] if path.exists() else ""


def _shared_alive(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    if _shared_alive(SHARED_URL):
        yield SHARED_URL
        return
    workdir = Path(tempfile.mkdtemp(prefix="sdserve-redis-"))
    server = RedisServer(workdir).start()
    try:
        yield server.url
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def delete_prefix(url: str, prefix: str) -> None:
    client = redis.Redis.from_url(url)
    try:
        batch = list(client.scan_iter(match=prefix + "*", count=1000))
        while batch:
            client.unlink(*batch[:1000])
            batch = batch[1000:]
    finally:
        client.close()


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    prefix = f"sdserve-test:{uuid.uuid4().hex[:12]}:"
    yield prefix
    delete_prefix(redis_url, prefix)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[Callable[..., RedisServer]]:
    servers: list[RedisServer] = []

    def start(**kwargs: Any) -> RedisServer:
        server = RedisServer(tmp_path / f"redis-{len(servers)}", **kwargs).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
