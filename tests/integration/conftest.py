from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sdserve.config import Settings
from tests.conftest import free_port
from tests.integration.live import LiveService, start_live


@pytest.fixture
def live_factory(
    make_settings: Callable[..., Settings], tiny_model_dir: Path
) -> Iterator[Callable[..., LiveService]]:
    """Start a real uvicorn server (and later workers) on a free port; stopped after."""
    started: list[LiveService] = []

    def start(
        run_dispatcher: bool = False, clock: Callable[[], float] = time.time, **overrides: Any
    ) -> LiveService:
        overrides.setdefault("model", str(tiny_model_dir))
        settings = make_settings(port=free_port(), **overrides)
        svc = start_live(settings, run_dispatcher=run_dispatcher, clock=clock)
        started.append(svc)
        return svc

    yield start
    for svc in started:
        svc.stop()
