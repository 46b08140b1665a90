"""The API's model catalog built from what workers publish in the registry."""

from __future__ import annotations

import json

import pytest

from sdserve.api.worker_catalog import WorkerCatalog, merge_states
from sdserve.domain.errors import InvalidRequest, NotReady
from sdserve.engine.base import ModelInfo
from sdserve.engine.catalog import Catalog
from sdserve.worker.registry import MemoryRegistry, WorkerState, parse_state, published_models

SD = ModelInfo("sd15", "/m/sd15", "sd1", 512, 512)
XL = ModelInfo("xl", "/m/xl", "sdxl", 1024, 1024, default_scheduler="euler")
UP = ModelInfo("up", "/m/up", "upscaler", 512, 512)


def _state(wid: str, catalog: Catalog) -> WorkerState:
    return WorkerState(
        id=wid,
        pid=1,
        ready=True,
        catalog=published_models(catalog),
        default_model=catalog.default.name,
    )


def test_workers_catalogs_merge_and_the_configured_default_wins() -> None:
    states = [_state("b", Catalog(XL, [UP])), _state("a", Catalog(SD))]
    merged = merge_states(states, preferred="")
    assert merged is not None
    assert merged.default == SD  # the first worker (by id) names the default
    assert sorted(merged.names()) == ["sd15", "up", "xl"]
    assert merged.get("xl") == XL and merged.get("xl").tasks == XL.tasks
    preferred = merge_states(states, preferred="xl")
    assert preferred is not None and preferred.default == XL
    assert merge_states([], preferred="xl") is None


def test_until_a_worker_publishes_requests_get_not_ready_then_the_last_catalog_stays() -> None:
    registry = MemoryRegistry()
    catalog = WorkerCatalog(registry)
    try:
        with pytest.raises(NotReady):
            catalog.get(None)
        assert catalog.all() == []
        registry.publish(_state("w1", Catalog(SD)))
        catalog.refresh()
        assert catalog.default == SD
        with pytest.raises(InvalidRequest) as err:
            catalog.get("nope")
        assert err.value.problems[0].field == "model"
        registry.remove("w1")  # every worker restarting: the API keeps serving
        catalog.refresh()
        assert catalog.get("sd15") == SD
    finally:
        catalog.close()


def test_states_from_other_versions_parse() -> None:
    newer = {"id": "w", "pid": 1, "ready": True, "gpu_temp": 71}
    assert parse_state(json.dumps(newer)) == WorkerState(id="w", pid=1, ready=True)
    assert parse_state("[1, 2]") is None
