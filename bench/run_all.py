"""Run every benchmark with small defaults (make bench)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

for script in ("queue_ceiling", "server_vs_direct", "batching"):
    subprocess.run([sys.executable, "-m", f"bench.{script}"], cwd=ROOT, check=True)
