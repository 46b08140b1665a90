"""Every facade route goes through the same keys and roles as the native API: no or a
wrong key -> 401, a reader writing -> 403 (each in its facade's envelope), and
options set by one tenant are not another's."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from sdserve.engine.fake import FakeEngine
from sdserve.security.keys import Role
from tests.integration.live import LiveService

Factory = Callable[..., LiveService]

WRITES = [
    "/v1/images/generations",
    "/v1/images/edits",
    "/v1/images/variations",
    "/sdapi/v1/txt2img",
    "/sdapi/v1/img2img",
    "/sdapi/v1/extra-single-image",
    "/sdapi/v1/interrupt",
    "/sdapi/v1/options",
]
READS = [
    "/v1/models/demo",
    "/sdapi/v1/progress",
    "/sdapi/v1/sd-models",
    "/sdapi/v1/samplers",
    "/sdapi/v1/upscalers",
    "/sdapi/v1/scripts",
    "/sdapi/v1/options",
]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: object) -> dict[str, object]:
    from sdserve.config import Settings
    from sdserve.testing import free_port
    from tests.integration.live import start_live

    settings = Settings(
        data_dir=tmp_path_factory.mktemp("compat-auth"),
        queue_backend="memory",
        port=free_port(),
        batch_window_ms=0,
        poll_interval_ms=50,
        webhook_secret="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        secret_key="test-secret-key-" + "0" * 32,
        auth="on",
    )
    svc = start_live(settings)
    svc.start_workers(FakeEngine())
    keys = {
        "reader": svc.services.keys.create("acme", Role.reader).key,
        "acme": svc.services.keys.create("acme", Role.user).key,
        "beta": svc.services.keys.create("beta", Role.user).key,
    }
    yield {"url": svc.url, "keys": keys}
    svc.stop()


def _error_type(path: str, r: httpx.Response) -> str:
    body = r.json()
    return str(body["error"]["code"] if path.startswith("/v1/") else body["error"])


@pytest.mark.parametrize("path", WRITES)
def test_writes_need_a_user_key(world: dict[str, object], path: str) -> None:
    url, keys = str(world["url"]) + path, world["keys"]
    assert isinstance(keys, dict)
    for auth, status, err in [
        (None, 401, "unauthorized"),
        (("u", "sk-wrong"), 401, "unauthorized"),
        (("u", keys["reader"]), 403, "forbidden"),
    ]:
        r = httpx.post(url, json={}, auth=auth)
        assert r.status_code == status, (path, auth, r.text)
        assert _error_type(path, r) == err
    bearer = {"Authorization": f"Bearer {keys['reader']}"}
    assert httpx.post(url, json={}, headers=bearer).status_code == 403


@pytest.mark.parametrize("path", READS)
def test_reads_need_a_key(world: dict[str, object], path: str) -> None:
    url, keys = str(world["url"]) + path, world["keys"]
    assert isinstance(keys, dict)
    assert httpx.get(url).status_code == 401
    assert httpx.get(url, auth=("u", keys["reader"])).status_code == 200


def test_options_are_per_tenant(world: dict[str, object]) -> None:
    url, keys = str(world["url"]) + "/sdapi/v1/options", world["keys"]
    assert isinstance(keys, dict)
    r = httpx.post(url, json={"samples_format": "webp"}, auth=("u", keys["acme"]))
    assert r.status_code == 200
    assert httpx.get(url, auth=("u", keys["acme"])).json()["samples_format"] == "webp"
    assert httpx.get(url, auth=("u", keys["beta"])).json()["samples_format"] == "png"
