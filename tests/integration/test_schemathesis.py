"""schemathesis over the served OpenAPI document, against a real uvicorn server with
workers: no input it generates may give a server error, and no response may break
the spec (schema, content type). Examples per operation are capped to keep it short."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
)

from sdserve.config import Settings
from sdserve.engine.fake import FakeEngine
from tests.conftest import free_port
from tests.integration.live import LiveService, start_live

EXAMPLES = 12
CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance]


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[LiveService]:
    live = start_live(
        Settings(
            data_dir=tmp_path_factory.mktemp("st"),
            queue_backend="memory",
            model=str(tiny_model_dir),
            port=free_port(),
            sync_timeout_seconds=5,
            webhook_secret="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            secret_key="test-secret-key-" + "0" * 32,
            auth="off",
        )
    )
    live.start_workers(FakeEngine())
    yield live
    live.stop()


def test_served_api_conforms(api: LiveService) -> None:
    # Driven with hypothesis directly (schemathesis' pytest plugin does not load under
    # this pytest): every operation, a capped number of generated cases each.
    schema = schemathesis.openapi.from_url(f"{api.url}/openapi.json")
    # Event streams never end by themselves: a generated case would wait forever.
    schema = schema.exclude(path_regex=r".*/events$")
    failures: list[str] = []
    statuses: list[int] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def run(case: schemathesis.Case) -> None:
            statuses.append(case.call_and_validate(checks=CHECKS).status_code)

        try:
            run()
        except Exception as exc:
            failures.append(f"{operation.label}: {exc}"[:2000])
    assert operations >= 20
    assert len(statuses) >= 5 * operations  # the cases really ran
    assert any(s < 300 for s in statuses) and any(400 <= s < 500 for s in statuses)
    assert not failures, "\n\n".join(failures)
