"""Docker HEALTHCHECK for the one sdserve image: GET /healthz on the port of the role
that PID 1 runs (`sdserve worker`: SDSERVE_WORKER_METRICS_PORT, default 9100; otherwise
the API's SDSERVE_PORT, default 8000). Standard library only; exit 0 = healthy.

An explicit port may be passed as the first argument.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence

API_PORT = 8000
WORKER_METRICS_PORT = 9100


def role_port(cmdline: Sequence[str], env: Mapping[str, str]) -> int:
    # Under `docker run --init` PID 1 is docker-init, whose arguments still name the role.
    if "worker" in cmdline:
        return int(env.get("SDSERVE_WORKER_METRICS_PORT") or WORKER_METRICS_PORT)
    return int(env.get("SDSERVE_PORT") or API_PORT)


def pid1_cmdline() -> list[str]:
    try:
        with open("/proc/1/cmdline", "rb") as fh:
            return [part.decode(errors="replace") for part in fh.read().split(b"\0") if part]
    except OSError:
        return []


def healthy(port: int, timeout: float = 4.0) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=timeout) as r:
            return bool(r.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def main(argv: Sequence[str]) -> int:
    port = int(argv[1]) if len(argv) > 1 else role_port(pid1_cmdline(), os.environ)
    return 0 if healthy(port) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
