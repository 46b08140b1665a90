"""Reload the catalog without a restart: on SIGHUP (this process) or by an admin call.

The signal handler only wakes a thread: reloading reads files and hashes weights,
which must not run inside a handler that interrupted arbitrary code.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from typing import Any

from sdserve.engine.catalog import Catalog

log = logging.getLogger("sdserve.models")


def summary(catalog: Catalog) -> dict[str, Any]:
    return {
        "models": catalog.names(),
        "aliases": catalog.aliases(),
        "rollouts": {a: r.shares() for a, r in catalog.rollouts().items()},
        "routes": [r.name for r in catalog.rules],
        "generation": catalog.generation,
    }


def reload_logged(catalog: Catalog) -> bool:
    try:
        catalog.reload()
    except Exception:  # a broken file leaves the current catalog serving
        log.exception("model registry reload failed; keeping the current models")
        return False
    log.info("model registry reloaded: %d models", len(catalog.names()))
    return True


def install_sighup(catalog: Catalog, forward: Callable[[], None] | None = None) -> threading.Event:
    """From the main thread: SIGHUP reloads ``catalog`` in a background thread (and
    calls ``forward``, e.g. to pass the signal on to worker processes). Returns the
    event that wakes the thread (set it to reload without a signal)."""
    wake = threading.Event()

    def on_signal(*_: object) -> None:
        wake.set()
        if forward is not None:
            forward()

    def loop() -> None:
        while True:
            wake.wait()
            wake.clear()
            reload_logged(catalog)

    threading.Thread(target=loop, name="registry-reload", daemon=True).start()
    signal.signal(signal.SIGHUP, on_signal)
    return wake
