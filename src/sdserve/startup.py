"""Start-up checks: a bad configuration ends the start with one clear line, not a
traceback, and not a worker that crash-loops forever.

Exit codes: 2 for a configuration the operator must fix before anything starts;
``WORKER_BROKEN_MODEL`` (3) for a worker whose model fails its integrity check (the
supervisor does not restart such a worker: a restart cannot fix the file).
"""

from __future__ import annotations

import sys
import tempfile
from typing import NoReturn

from pydantic import ValidationError
from pydantic_settings import SettingsError

from sdserve.config import Settings
from sdserve.domain.errors import SdserveError

CONFIG_ERROR_EXIT = 2
WORKER_BROKEN_MODEL = 3


def settings_problem(exc: ValidationError) -> str:
    """One line naming the invalid setting(s) and why."""
    parts = []
    for err in exc.errors():
        name = ".".join(str(p) for p in err.get("loc", ())) or "settings"
        parts.append(f"SDSERVE_{name.upper()}: {err.get('msg', 'invalid value')}")
    return "invalid setting: " + "; ".join(parts)


def data_dir_problem(settings: Settings) -> str | None:
    """The data dir must be (or become) a directory this process can write."""
    path = settings.data_dir
    if path.exists() and not path.is_dir():
        return f"data dir {path} is a file, not a directory"
    if not path.exists():
        try:
            path.mkdir(mode=0o700, parents=True)
        except OSError as exc:
            return f"data dir {path} does not exist and cannot be created: {exc.strerror}"
    try:  # os.access lies for root on read-only mounts: really write
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        return f"data dir {path} is not writable: {exc.strerror}"
    return None


def model_problem(settings: Settings) -> str | None:
    """The configured default model must be whole (a hub id is checked on download)."""
    if not settings.model:
        return None
    from sdserve.engine.integrity import model_problem as integrity_problem
    from sdserve.wiring import default_model

    # As default_model resolves it: a name under the models dir, else a path.
    candidate = settings.resolved_models_dir / settings.model
    source = str(candidate) if candidate.exists() else settings.model
    problem = integrity_problem(source)
    if problem is None:
        try:
            default_model(settings)
        except SdserveError as exc:
            problem = exc.message
        except (OSError, ValueError) as exc:
            problem = str(exc)
    return None if problem is None else f"default model {settings.model!r}: {problem}"


def startup_problem(settings: Settings) -> str | None:
    return data_dir_problem(settings) or model_problem(settings)


def fail(line: str, code: int = CONFIG_ERROR_EXIT) -> NoReturn:
    print(f"error: {line}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    sys.exit(code)


def load_settings() -> Settings:
    """Settings from the environment, or one line and exit 2."""
    try:
        return Settings()
    except ValidationError as exc:
        fail(settings_problem(exc))
    except SettingsError as exc:  # a value the environment source cannot parse
        fail(f"invalid setting: {exc}")


def check_or_exit(settings: Settings) -> None:
    problem = startup_problem(settings)
    if problem is not None:
        fail(problem)


def check_worker_or_exit(settings: Settings) -> None:
    """As ``check_or_exit``, but a broken model exits ``WORKER_BROKEN_MODEL`` so a
    supervisor knows a restart will not help."""
    problem = data_dir_problem(settings)
    if problem is not None:
        fail(problem)
    problem = model_problem(settings)
    if problem is not None:
        fail(problem, WORKER_BROKEN_MODEL)
