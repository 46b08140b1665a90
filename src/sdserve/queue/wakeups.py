"""WakeupBus implementations: in-process (threads + asyncio) and UNIX datagram sockets.

Wake-ups are hints, never the truth: a lost one costs at most a poll interval, so
every send is non-blocking and every failure to deliver is ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import select
import socket
import tempfile
import threading
import time
import uuid
from collections import OrderedDict
from pathlib import Path
from typing import Literal

Role = Literal["api", "worker"]

# AF_UNIX paths must fit in sun_path (108 bytes with the NUL); keep a margin.
_MAX_SOCKET_PATH = 100
_MAX_PENDING_WAKEUPS = 64  # coalesce bursts: a flood of enqueues is not a flood of polls
_DATAGRAM_MAX = 512
_UNHEARD_KEEP_S = 5.0  # a wake-up nobody was waiting for answers a wait this soon after
_MAX_UNHEARD = 4096


class JobWaiters:
    """asyncio futures per job id; woken from any thread.

    A waiter reads the job, then waits: a wake-up that lands between the two would be
    lost and cost a whole poll interval (seen on ~5% of synchronous requests). So a
    wake-up with nobody waiting is kept for a short while and answers the next wait
    at once; at worst a stale one costs the waiter one extra read."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: dict[str, set[asyncio.Future[None]]] = {}
        self._unheard: OrderedDict[str, float] = OrderedDict()  # job id -> when woken

    async def wait(self, job_id: str, timeout: float) -> bool:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        with self._lock:
            woken_at = self._unheard.pop(job_id, None)
            if woken_at is not None and time.monotonic() - woken_at < _UNHEARD_KEEP_S:
                return True
            self._waiters.setdefault(job_id, set()).add(fut)
        try:
            await asyncio.wait_for(fut, timeout)
            return True
        except TimeoutError:
            return False
        finally:
            with self._lock:
                waiting = self._waiters.get(job_id)
                if waiting is not None:
                    waiting.discard(fut)
                    if not waiting:
                        del self._waiters[job_id]

    def wake(self, job_id: str) -> None:
        with self._lock:
            futures = list(self._waiters.get(job_id, ()))
            if not futures:
                self._unheard[job_id] = time.monotonic()
                self._unheard.move_to_end(job_id)
                while len(self._unheard) > _MAX_UNHEARD:
                    self._unheard.popitem(last=False)
        for fut in futures:
            # The caller may be a worker thread: only the future's loop may resolve it.
            with contextlib.suppress(RuntimeError):  # that loop is already closed
                fut.get_loop().call_soon_threadsafe(_resolve, fut)


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class LocalWakeupBus:
    """One process: workers are threads, API waiters live on an asyncio loop."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._pending = 0  # wake-ups sent while no worker was waiting are kept
        self._closed = False
        self._jobs = JobWaiters()

    def notify_workers(self) -> None:
        with self._cond:
            self._pending = min(self._pending + 1, _MAX_PENDING_WAKEUPS)
            self._cond.notify()

    def wait_for_work(self, timeout: float) -> bool:
        with self._cond:
            woke = self._cond.wait_for(lambda: self._pending > 0 or self._closed, timeout)
            if not woke or self._closed:
                return False
            self._pending -= 1
            return True

    def notify_job(self, job_id: str) -> None:
        self._jobs.wake(job_id)

    async def wait_job(self, job_id: str, timeout: float) -> bool:
        return await self._jobs.wait(job_id, timeout)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class SocketWakeupBus:
    """Several processes on one machine (``sdserve serve``): one datagram socket each.

    Workers bind in ``<dir>/workers/``, API processes in ``<dir>/api/``. A socket file
    whose process died refuses datagrams (ECONNREFUSED) and is removed by the sender.
    ``wait_for_work`` is for the worker role, ``wait_job`` for the api role.
    """

    def __init__(self, run_dir: Path, role: Role) -> None:
        if role not in ("api", "worker"):
            raise ValueError(f"unknown role {role!r}")
        self.role = role
        self.base = socket_base_dir(run_dir)
        self._dirs = {"worker": self.base / "workers", "api": self.base / "api"}
        for d in self._dirs.values():
            d.mkdir(mode=0o700, parents=True, exist_ok=True)
            sweep_dead_sockets(d)
        self.path = self._dirs[role] / f"{os.getpid()}-{uuid.uuid4().hex[:8]}.sock"
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(self.path))
        self._sock.setblocking(False)
        self._sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sender.setblocking(False)
        self._send_lock = threading.Lock()
        self._jobs = JobWaiters()
        self._reader_loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    # --- sending ---
    def notify_workers(self) -> None:
        self._broadcast(self._dirs["worker"], b"w")

    def notify_job(self, job_id: str) -> None:
        self._broadcast(self._dirs["api"], job_id.encode())

    def _broadcast(self, directory: Path, data: bytes) -> None:
        try:
            names = os.listdir(directory)
        except FileNotFoundError:
            return
        for name in names:
            if name.endswith(".sock"):
                self._send(str(directory / name), data)

    def _send(self, path: str, data: bytes) -> None:
        try:
            with self._send_lock:
                self._sender.sendto(data, path)
        except ConnectionRefusedError:
            # Nobody bound: the process that made this file is gone.
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        except OSError:
            # EAGAIN/ENOBUFS: the receiver already has wake-ups queued; ENOENT: just
            # removed. A wake-up is never worth failing a job transition for.
            return

    # --- worker side ---
    def wait_for_work(self, timeout: float) -> bool:
        if self._closed:
            return False
        try:
            ready, _, _ = select.select([self._sock], [], [], max(timeout, 0.0))
        except (OSError, ValueError):  # closed from another thread
            return False
        return bool(ready) and bool(self._drain())

    def _drain(self) -> list[bytes]:
        got: list[bytes] = []
        while True:
            try:
                got.append(self._sock.recv(_DATAGRAM_MAX))
            except OSError:  # BlockingIOError: drained; others: closed meanwhile
                return got

    # --- api side ---
    async def wait_job(self, job_id: str, timeout: float) -> bool:
        self._ensure_reader(asyncio.get_running_loop())
        return await self._jobs.wait(job_id, timeout)

    def _ensure_reader(self, loop: asyncio.AbstractEventLoop) -> None:
        """Read the socket from the loop the waiters run on (started lazily, moved if
        a new loop appears, as in tests that run several ``asyncio.run``)."""
        if self._reader_loop is loop or self._closed:
            return
        self._remove_reader()
        loop.add_reader(self._sock.fileno(), self._on_readable)
        self._reader_loop = loop

    def _remove_reader(self) -> None:
        old = self._reader_loop
        self._reader_loop = None
        if old is not None and not old.is_closed():
            with contextlib.suppress(RuntimeError, ValueError, OSError):
                old.remove_reader(self._sock.fileno())

    def _on_readable(self) -> None:
        for data in self._drain():
            self._jobs.wake(data.decode(errors="replace"))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._remove_reader()
        self._sock.close()
        self._sender.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


def socket_base_dir(run_dir: Path) -> Path:
    """``run_dir`` itself when socket paths fit AF_UNIX's limit; otherwise a private
    directory under the temp dir named by a hash of ``run_dir``, so every process of
    one deployment computes the same fallback."""
    run_dir = Path(run_dir).absolute()
    longest = len(str(run_dir / "workers" / f"{'9' * 7}-{'f' * 8}.sock"))
    if longest <= _MAX_SOCKET_PATH:
        return run_dir
    digest = hashlib.sha256(str(run_dir).encode()).hexdigest()[:16]
    base = Path(tempfile.gettempdir()) / f"sdserve-{digest}"
    base.mkdir(mode=0o700, exist_ok=True)
    if base.stat().st_uid != os.getuid():
        raise PermissionError(f"{base} belongs to another user; shorten the data dir")
    return base


def sweep_dead_sockets(directory: Path) -> list[Path]:
    """Remove socket files named after processes that no longer exist."""
    removed = []
    for entry in directory.glob("*.sock"):
        pid_text = entry.name.split("-", 1)[0]
        if not pid_text.isdigit() or _alive(int(pid_text)):
            continue
        with contextlib.suppress(FileNotFoundError):
            entry.unlink()
            removed.append(entry)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, belongs to someone else
    return True
