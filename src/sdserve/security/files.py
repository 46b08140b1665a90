"""Secret files in the data dir: created once, 0600 from the first byte, race-free."""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)


def publish_private(path: Path, content: str) -> bool:
    """Write ``content`` to ``path`` (mode 0600) unless it exists; True if this call
    wrote it. A private temp file is published with ``os.link``, which fails when
    another process got there first, so API and worker processes starting together
    end up with one file and all read the same value."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            fh.write(content + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def read_or_create(path: Path, make: Callable[[], str]) -> str:
    """The file's content, creating it with ``make()`` on first use."""
    if not path.exists():
        publish_private(path, make())
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        log.warning("secret file %s is readable by others (mode %o); chmod 600 it", path, mode)
    return path.read_text(encoding="ascii").strip()


def private_database(path: Path) -> None:
    """Make ``path`` (an SQLite file holding prompts) and its WAL/SHM owner-only.

    The file is created 0600 before SQLite opens it: SQLite creates ``-wal`` and
    ``-shm`` with the database file's mode, so they inherit it. Files an older version
    left 0644 are tightened (the owner keeps read/write)."""
    if not path.exists():
        with contextlib.suppress(FileExistsError):
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    for member in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        with contextlib.suppress(FileNotFoundError):
            if member.stat().st_mode & 0o077:
                member.chmod(0o600)
