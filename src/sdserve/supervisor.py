"""`sdserve serve`: one API process that owns the data dir and supervises workers."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import signal
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
    """Runs N worker processes and restarts any that die."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * settings.workers
        self.restarts = [0] * settings.workers
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="supervisor", daemon=True)

    def _spawn(self, index: int) -> None:
        cmd = [sys.executable, "-m", "sdserve", "worker", "--embedded"]
        self.procs[index] = subprocess.Popen(cmd, env=settings_env(self.settings))
        log.info("started worker %d (pid %d)", index, self.procs[index].pid)  # type: ignore[union-attr]

    def start(self) -> None:
        for i in range(len(self.procs)):
            self._spawn(i)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(0.5):
            for i, proc in enumerate(self.procs):
                if proc is None or proc.poll() is None or self._stop.is_set():
                    continue
                if proc.returncode == WORKER_BROKEN_MODEL:  # restarting cannot fix a file
                    log.error("worker %d: its model is broken (see above); not restarting", i)
                    self.procs[i] = None
                    continue
                delay = _RESTART_BACKOFF_S[min(self.restarts[i], len(_RESTART_BACKOFF_S) - 1)]
                log.error(
                    "worker %d exited with %s; restarting in %.0fs", i, proc.returncode, delay
                )
                self.restarts[i] += 1
                if self._stop.wait(delay):
                    return
                self._spawn(i)

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


def _require_shared_backend(settings: Settings) -> None:
    """A clear refusal (exit 1, no traceback) for a backend these processes cannot share."""
    from sdserve.queue.factory import BackendUnavailable, require_shared_backend

    try:
        require_shared_backend(settings)
    except BackendUnavailable as exc:
        raise SystemExit(f"error: {exc.message}") from None


def _build_services(settings: Settings) -> Services:
    """The API's services, the first admin key made if there is none; a setting that
    cannot work (e.g. no SDSERVE_SECRET_KEY with Redis) ends the start with one line."""
    from sdserve.api.services import build_services
    from sdserve.security.bootstrap import ensure_admin_key
    from sdserve.security.server_key import SecretKeyMissing

    try:
        services = build_services(settings)
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
        supervisor.stop()
        lock.close()


def api_only(settings: Settings) -> None:
    """The API without workers (they run as `sdserve worker`, here or elsewhere); jobs
    of dead workers come back when their leases expire."""
    _require_shared_backend(settings)
    _run_api(settings, _build_services(settings))


def _run_api(
    settings: Settings, services: Services, forward_hup: Callable[[], None] | None = None
) -> None:
    import uvicorn

    from sdserve.api.app import create_app
    from sdserve.models.reload import install_sighup

    install_sighup(services.catalog, forward_hup)  # reload models without a restart
    from sdserve.api.edge import uvicorn_tls

    uvicorn.run(
        create_app(services),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        access_log=False,
        timeout_graceful_shutdown=5,
        **uvicorn_tls(settings),  # type: ignore[arg-type]
    )


def worker_main(settings: Settings, embedded: bool) -> None:
    from sdserve.worker.process import run_worker_process

    _require_shared_backend(settings)
    run_worker_process(settings, embedded)
