"""`sdserve serve`: one API process that owns the data dir and supervises workers."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any

from pydantic import SecretStr

from sdserve.config import Settings
from sdserve.startup import WORKER_BROKEN_MODEL

if TYPE_CHECKING:
    from sdserve.api.services import Services

log = logging.getLogger("sdserve.serve")
_RESTART_BACKOFF_S = (1.0, 2.0, 5.0, 10.0, 30.0)
# A restarted worker that has stayed up this long is healthy again: back-off resets.
_STABLE_S = 60.0


def settings_env(settings: Settings) -> dict[str, str]:
    """The settings as SDSERVE_* variables, so child processes see the same values."""
    env = dict(os.environ)
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if isinstance(value, SecretStr):  # model_dump keeps it masked
            value = value.get_secret_value()
            if not value:
                continue
        key = f"SDSERVE_{name.upper()}"
        if isinstance(value, list):
            env[key] = ",".join(str(v) for v in value)
        elif isinstance(value, dict):
            env[key] = json.dumps(value)
        elif isinstance(value, bool):
            env[key] = "true" if value else "false"
        else:
            env[key] = str(value)
    return env


def acquire_data_dir(settings: Settings) -> IO[Any]:
    """Only one `serve` may own a data dir: it is what lets start-up requeue every job
    left running (their workers died with the previous owner)."""
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    handle = (settings.run_dir / "serve.lock").open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise SystemExit(
            f"another `sdserve serve` already uses {settings.data_dir}; stop it or pick "
            "another --data-dir"
        ) from None
    return handle


def ensure_default_model(settings: Settings) -> None:
    from sdserve.wiring import TINY_NAME, default_model, tiny_model_path

    info = default_model(settings)
    if settings.model:
        log.info("model: %s (%s)", info.name, info.source)
        return
    if info.name != TINY_NAME:
        log.info("no model configured: using the packaged demo model (%s)", info.source)
        return
    path = tiny_model_path(settings)
    if not (path / "model_index.json").exists():
        log.info("no model configured: creating the tiny demo model at %s", path)
        subprocess.run(
            [sys.executable, "-m", "sdserve", "models", "create-demo", str(path)],
            check=True,
            env=settings_env(settings),
        )
    log.info("no model configured: using the tiny demo model at %s", path)


class WorkerSupervisor:
    """Runs N worker processes and restarts any that die, backing off while a worker
    keeps dying; the back-off resets once a restarted worker has been ready for
    ``stable_s`` (a crash next week is not part of today's crash loop)."""

    def __init__(
        self, settings: Settings, ready_pids: Callable[[], set[int]] | None = None
    ) -> None:
        self.settings = settings
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * settings.workers
        self.restarts = [0] * settings.workers
        self.ready_since: list[float | None] = [None] * settings.workers
        self.stable_s = _STABLE_S
        self.ready_pids = ready_pids or _registry_ready_pids(settings)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="supervisor", daemon=True)

    def _spawn(self, index: int) -> None:
        cmd = [sys.executable, "-m", "sdserve", "worker", "--embedded"]
        env = settings_env(self.settings)
        if self.settings.worker_metrics_port:  # one port each: worker i gets base + i
            env["SDSERVE_WORKER_METRICS_PORT"] = str(self.settings.worker_metrics_port + index)
        self.procs[index] = subprocess.Popen(cmd, env=env)
        self.ready_since[index] = None
        log.info("started worker %d (pid %d)", index, self.procs[index].pid)  # type: ignore[union-attr]

    def start(self) -> None:
        for i in range(len(self.procs)):
            self._spawn(i)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(0.5):
            self.note_ready(time.monotonic())
            for i, proc in enumerate(self.procs):
                if proc is None or proc.poll() is None or self._stop.is_set():
                    continue
                if proc.returncode == WORKER_BROKEN_MODEL:  # restarting cannot fix a file
                    log.error("worker %d: its model is broken (see above); not restarting", i)
                    self.procs[i] = None
                    continue
                delay = self.next_delay(i)
                log.error(
                    "worker %d exited with %s; restarting in %.0fs", i, proc.returncode, delay
                )
                if self._stop.wait(delay):
                    return
                self._spawn(i)

    def next_delay(self, index: int) -> float:
        delay = _RESTART_BACKOFF_S[min(self.restarts[index], len(_RESTART_BACKOFF_S) - 1)]
        self.restarts[index] += 1
        return delay

    def note_ready(self, now: float) -> None:
        """Reset the back-off of restarted workers that have been ready ``stable_s``."""
        if not any(self.restarts):
            return  # nothing to reset: no registry read
        try:
            ready = self.ready_pids()
        except Exception:  # the registry is away: try next round
            log.exception("reading worker readiness failed")
            return
        for i, proc in enumerate(self.procs):
            if proc is None or not self.restarts[i]:
                continue
            if proc.pid not in ready:
                self.ready_since[i] = None
            elif self.ready_since[i] is None:
                self.ready_since[i] = now
            elif now - (self.ready_since[i] or now) >= self.stable_s:
                log.info("worker %d ready for %.0fs: restart back-off reset", i, self.stable_s)
                self.restarts[i] = 0

    def send(self, sig: int) -> None:
        """Pass a signal on to every live worker (SIGHUP: reload the model registry)."""
        for proc in self.procs:
            if proc is not None and proc.poll() is None:
                proc.send_signal(sig)

    def stop(self, grace: float = 30.0) -> None:
        """SIGTERM: workers finish their batch; past the grace period, SIGKILL (their
        jobs come back when the next start requeues them)."""
        self._stop.set()
        live = [p for p in self.procs if p is not None and p.poll() is None]
        for proc in live:
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in live:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()


def _registry_ready_pids(settings: Settings) -> Callable[[], set[int]]:
    from sdserve.worker.registry import READY_TTL_S, build_registry

    registry = build_registry(settings)
    host = socket.gethostname()
    return lambda: {s.pid for s in registry.live(READY_TTL_S) if s.ready and s.host in ("", host)}


def _require_shared_backend(settings: Settings) -> None:
    """A clear refusal (exit 1, no traceback) for a backend these processes cannot share."""
    from sdserve.queue.factory import BackendUnavailable, require_shared_backend

    try:
        require_shared_backend(settings)
    except BackendUnavailable as exc:
        raise SystemExit(f"error: {exc.message}") from None


def _build_services(settings: Settings, worker_catalog: bool = False) -> Services:
    """The API's services, the first admin key made if there is none; a setting that
    cannot work (e.g. no SDSERVE_SECRET_KEY with Redis) ends the start with one line."""
    from sdserve.api.services import build_services
    from sdserve.security.bootstrap import ensure_admin_key
    from sdserve.security.server_key import SecretKeyMissing

    try:
        services = build_services(settings, worker_catalog=worker_catalog)
    except SecretKeyMissing as exc:
        raise SystemExit(f"error: {exc.message}") from None
    ensure_admin_key(settings, services.keys)
    return services


def serve(settings: Settings) -> None:
    _require_shared_backend(settings)
    settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    lock = acquire_data_dir(settings)
    ensure_default_model(settings)
    services = _build_services(settings)
    if settings.queue_backend == "sqlite":
        # We own the data dir, so every job still marked running lost its worker. (A
        # Redis store is shared with workers elsewhere: their leases expire instead.)
        requeued = services.queue.reclaim_expired(every_lease=True)
        for stale in (settings.run_dir / "worker-state").glob("*.json"):
            stale.unlink(missing_ok=True)  # their workers died too: not ready until new ones are
        if requeued:
            log.info("requeued %d job(s) left running by a previous process", len(requeued))
    supervisor = WorkerSupervisor(settings)
    supervisor.start()
    try:
        _run_api(settings, services, forward_hup=lambda: supervisor.send(signal.SIGHUP))
    finally:
        supervisor.stop(grace=settings.drain_seconds + 5)
        lock.close()


def api_only(settings: Settings) -> None:
    """The API without workers (they run as `sdserve worker`, here or elsewhere); jobs
    of dead workers come back when their leases expire."""
    _require_shared_backend(settings)
    _run_api(settings, _build_services(settings, worker_catalog=True))


def _run_api(
    settings: Settings, services: Services, forward_hup: Callable[[], None] | None = None
) -> None:
    from sdserve.api.drain import DrainingServer
    from sdserve.api.worker_catalog import WorkerCatalog
    from sdserve.models.reload import install_sighup

    if not isinstance(services.catalog, WorkerCatalog):  # that one follows the workers
        install_sighup(services.catalog, forward_hup)  # reload models without a restart
    DrainingServer.for_services(settings, services).run()


def worker_main(settings: Settings, embedded: bool) -> None:
    from sdserve.worker.process import run_worker_process

    _require_shared_backend(settings)
    run_worker_process(settings, embedded)
