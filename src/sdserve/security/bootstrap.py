"""Start-up checks: the first admin key, and no open API on a public address.

The first start of an embedded deployment (SQLite) with auth on and no keys writes
an admin key of tenant "default" to <data_dir>/admin_key (0600) and logs where it is,
never the key itself (logs are shipped and kept; the file is as private as the
database beside it). The key lives in that file first and is registered from it,
so a start interrupted between the two, or several processes starting at once,
all end with the one key of the one file. A Redis deployment's processes share no
disk: there the first admin key is made with `sdserve keys create`.
"""

from __future__ import annotations

import ipaddress
import logging
from pathlib import Path

from sdserve.config import Settings
from sdserve.domain.tenants import DEFAULT_TENANT
from sdserve.security.base import KeyStore
from sdserve.security.files import publish_private
from sdserve.security.keys import Role, format_key, new_key_material, parse_key

log = logging.getLogger("sdserve.security")
ADMIN_KEY_FILE = "admin_key"


def admin_key_path(settings: Settings) -> Path:
    return settings.data_dir / ADMIN_KEY_FILE


def ensure_admin_key(settings: Settings, keys: KeyStore) -> Path | None:
    """Create the first admin key when there is none; returns the file it is in."""
    if settings.auth == "off" or keys.has_keys():
        return None
    if settings.queue_backend == "redis":
        log.warning(
            "auth is on and there are no API keys yet: create the first admin key with "
            "`sdserve keys create --tenant %s --role admin`",
            DEFAULT_TENANT,
        )
        return None
    path = admin_key_path(settings)
    if not path.exists():
        key_id, secret = new_key_material()
        publish_private(path, format_key(key_id, secret))
    parsed = parse_key(path.read_text(encoding="ascii").strip())
    if parsed is None:
        log.error("%s does not hold an API key; delete it and start again", path)
        return None
    keys.create(DEFAULT_TENANT, Role.admin, name="first admin key", material=parsed)
    log.warning(
        "auth is on: the first admin key (tenant %r) is in %s (mode 0600). Keep it "
        "somewhere safe and delete the file; see docs/security.md",
        DEFAULT_TENANT,
        path,
    )
    return path


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


def exposure_problem(settings: Settings, insecure: bool) -> str | None:
    """Why this start is refused, or None: auth off on a non-loopback address needs
    an explicit --insecure."""
    if settings.auth == "off" and not is_loopback(settings.host) and not insecure:
        return (
            f"refusing to serve on {settings.host} with SDSERVE_AUTH=off: anyone who reaches "
            "the port could use the service. Turn auth on, bind 127.0.0.1, or pass --insecure"
        )
    return None
