"""The one BlobStore contract: every store must pass every test here.

The s3 store runs against a real S3-compatible server (moto's standalone server in a
child process, see tests/s3server.py), one fresh bucket per test. Add a store by adding
a branch to ``_Stores.make`` and its name to ``STORES``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from sdserve.domain.errors import InvalidRequest
from sdserve.storage.base import BlobStore
from tests.s3server import MotoServer, unique_bucket

STORES = ["local", "memory", "s3"]


def image_id(n: int, fmt: str = "png") -> str:
    return f"{n:032x}.{fmt}"


class _Stores:
    def __init__(self, name: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
        self.name = name
        self.root = tmp_path / "images"
        self.bucket = unique_bucket()
        self.server: MotoServer | None = None
        if name == "s3":
            self.server = request.getfixturevalue("s3_env")

    def make(self) -> BlobStore:
        """A new store instance on the same storage (same folder, same bucket)."""
        if self.name == "local":
            from sdserve.storage.local import LocalBlobStore

            return LocalBlobStore(self.root)
        if self.name == "memory":
            from sdserve.storage.memory import MemoryBlobStore

            return MemoryBlobStore()
        if self.name == "s3":
            from sdserve.storage.s3 import S3BlobStore, make_client

            assert self.server is not None
            store = S3BlobStore(make_client(self.server.endpoint, None), self.bucket, "t/")
            store.ensure_bucket(create=True)
            return store
        raise AssertionError(self.name)  # pragma: no cover

    @property
    def durable(self) -> bool:
        return self.name != "memory"

    @property
    def signs_urls(self) -> bool:
        return self.name == "s3"


@pytest.fixture(params=STORES)
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> _Stores:
    return _Stores(request.param, tmp_path, request)


@pytest.fixture
def store(stores: _Stores) -> BlobStore:
    return stores.make()


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
def test_put_get_round_trip(store: BlobStore, fmt: str) -> None:
    data = os.urandom(3000) + b"\x00\xff" * 10
    store.put(image_id(1, fmt), data)
    assert store.get(image_id(1, fmt)) == data
    assert store.exists(image_id(1, fmt))


def test_empty_blob_round_trips(store: BlobStore) -> None:
    store.put(image_id(2), b"")
    assert store.get(image_id(2)) == b""
    assert store.exists(image_id(2))


def test_overwrite_replaces_and_repeating_is_idempotent(store: BlobStore) -> None:
    store.put(image_id(3), b"first")
    store.put(image_id(3), b"second")
    assert store.get(image_id(3)) == b"second"
    store.put(image_id(3), b"second")
    assert store.get(image_id(3)) == b"second"
    assert store.get(image_id(4)) is None, "an overwrite touched another id"


def test_missing_id_is_none_not_an_error(store: BlobStore) -> None:
    assert store.get(image_id(5)) is None
    assert not store.exists(image_id(5))
    assert store.delete(image_id(5)) is False


def test_delete_removes_and_is_idempotent(store: BlobStore) -> None:
    store.put(image_id(6), b"x")
    store.put(image_id(7), b"y")
    assert store.delete(image_id(6)) is True
    assert store.get(image_id(6)) is None
    assert not store.exists(image_id(6))
    assert store.delete(image_id(6)) is False
    assert store.get(image_id(7)) == b"y", "delete removed another id"


def test_delete_tenant_drops_that_tenant_only(store: BlobStore) -> None:
    for i in range(3):
        store.put(image_id(20 + i), b"a", tenant="acme")
    store.put(image_id(30), b"b", tenant="acme2")  # a name that extends "acme"
    store.put(image_id(31), b"c")
    assert store.delete_tenant("acme") == 3
    assert not store.exists(image_id(20), tenant="acme")
    assert store.get(image_id(30), tenant="acme2") == b"b"
    assert store.get(image_id(31)) == b"c"
    assert store.delete_tenant("acme") == 0
    store.put(image_id(20), b"again", tenant="acme")  # the tenant can store again
    assert store.get(image_id(20), tenant="acme") == b"again"


def test_ids_differing_only_in_format_are_distinct(store: BlobStore) -> None:
    store.put(image_id(8, "png"), b"png")
    store.put(image_id(8, "webp"), b"webp")
    assert store.get(image_id(8, "png")) == b"png"
    assert store.get(image_id(8, "webp")) == b"webp"


BAD_IDS = [
    "",
    "../" + "a" * 32 + ".png",
    "a" * 32 + ".png/../" + "b" * 32 + ".png",
    "/" + "a" * 32 + ".png",
    "A" * 32 + ".png",
    "a" * 31 + ".png",
    "a" * 33 + ".png",
    "a" * 32 + ".gif",
    "a" * 32,
    "a" * 32 + ".png\n",
    "g" * 32 + ".png",
]


@pytest.mark.parametrize("bad", BAD_IDS)
def test_invalid_ids_are_refused_by_every_operation(stores: _Stores, bad: str) -> None:
    store = stores.make()
    calls: list[Callable[[], object]] = [
        lambda: store.put(bad, b"evil"),
        lambda: store.get(bad),
        lambda: store.exists(bad),
        lambda: store.delete(bad),
        lambda: store.url(bad, 60),
    ]
    for call in calls:
        with pytest.raises(InvalidRequest) as info:
            call()
        assert info.value.problems[0].field == "image_id"
    if stores.name == "local":
        written = [p for p in stores.root.parent.rglob("*") if p.is_file()]
        assert written == [], f"a refused id still wrote {written}"


def test_concurrent_puts_of_one_id_leave_one_whole_value(store: BlobStore) -> None:
    """A retried job and its first attempt may write the same id at once: readers see
    nothing or one writer's whole bytes, never a mix or a part."""
    size = 256 * 1024
    payloads = [bytes([i]) * size for i in range(8)]
    ident = image_id(9)
    barrier = threading.Barrier(len(payloads) + 1)
    seen: list[bytes | None] = []
    errors: list[BaseException] = []
    writers_done = threading.Event()

    def write(data: bytes) -> None:
        try:
            barrier.wait()
            for _ in range(3):
                store.put(ident, data)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    def read() -> None:
        barrier.wait()
        while not writers_done.is_set():
            seen.append(store.get(ident))

    threads = [threading.Thread(target=write, args=(p,)) for p in payloads]
    reader = threading.Thread(target=read)
    for t in [*threads, reader]:
        t.start()
    for t in threads:
        t.join(timeout=120)
    writers_done.set()
    reader.join(timeout=120)
    assert errors == []
    final = store.get(ident)
    assert final in payloads
    torn = [s for s in seen if s is not None and s not in payloads]
    assert torn == [], f"{len(torn)} reads saw a partial or mixed image"


def test_concurrent_puts_of_distinct_ids_all_land(store: BlobStore) -> None:
    ids = [image_id(100 + i) for i in range(16)]

    def write(ident: str) -> None:
        store.put(ident, ident.encode())

    threads = [threading.Thread(target=write, args=(i,)) for i in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert [store.get(i) for i in ids] == [i.encode() for i in ids]


def test_large_blob_round_trips(store: BlobStore) -> None:
    # Larger than a 2048x2048 RGB PNG can be (12 MiB raw) and than boto3's 8 MiB
    # multipart threshold, in case a store ever switches to managed transfers.
    data = os.urandom(20 * 1024 * 1024)
    store.put(image_id(10), data)
    assert store.get(image_id(10)) == data


def test_a_new_instance_sees_what_was_stored(stores: _Stores) -> None:
    stores.make().put(image_id(11), b"kept")
    again = stores.make()
    if stores.durable:
        assert again.get(image_id(11)) == b"kept"
    else:
        assert again.get(image_id(11)) is None  # memory: one instance, one process


def test_url_is_downloadable_when_the_store_signs_urls(store: BlobStore, stores: _Stores) -> None:
    data = os.urandom(5000)
    store.put(image_id(12, "webp"), data)
    url = store.url(image_id(12, "webp"), 300)
    if not stores.signs_urls:
        assert url is None  # served through GET /v1/images/{id}
        return
    assert url is not None
    response = httpx.get(url, timeout=30)
    assert response.status_code == 200
    assert response.content == data
    assert response.headers["content-type"] == "image/webp"
    assert "X-Amz-Expires=300" in url
    # Signing does not check existence: a URL for a missing image answers 404.
    missing = store.url(image_id(13), 300)
    assert missing is not None
    assert httpx.get(missing, timeout=30).status_code == 404


# --- tenants: every call is scoped; an id under one tenant is absent under another ---


def test_an_id_is_only_found_under_its_tenant(store: BlobStore) -> None:
    ident = image_id(20)
    store.put(ident, b"acme's", tenant="acme")
    assert store.get(ident, tenant="acme") == b"acme's"
    assert store.exists(ident, tenant="acme")
    for other in ("beta", None):
        assert store.get(ident, tenant=other) is None
        assert not store.exists(ident, tenant=other)
        assert store.delete(ident, tenant=other) is False
    assert store.get(ident, tenant="acme") == b"acme's", "another tenant's delete removed it"


def test_one_id_under_two_tenants_is_two_blobs(store: BlobStore) -> None:
    ident = image_id(21)
    store.put(ident, b"a", tenant="acme")
    store.put(ident, b"b", tenant="beta")
    store.put(ident, b"none")
    assert [store.get(ident, tenant=t) for t in ("acme", "beta", None)] == [b"a", b"b", b"none"]
    assert store.delete(ident, tenant="beta") is True
    assert [store.get(ident, tenant=t) for t in ("acme", "beta", None)] == [b"a", None, b"none"]


BAD_TENANTS = ["", "..", "../acme", "acme/..", "a/b", "Acme", "-x", "x" * 64, "a\n"]


@pytest.mark.parametrize("bad", BAD_TENANTS)
def test_invalid_tenants_are_refused_by_every_operation(stores: _Stores, bad: str) -> None:
    store = stores.make()
    ident = image_id(22)
    calls: list[Callable[[], object]] = [
        lambda: store.put(ident, b"evil", tenant=bad),
        lambda: store.get(ident, tenant=bad),
        lambda: store.exists(ident, tenant=bad),
        lambda: store.delete(ident, tenant=bad),
        lambda: store.url(ident, 60, tenant=bad),
    ]
    for call in calls:
        with pytest.raises(InvalidRequest) as info:
            call()
        assert info.value.problems[0].field == "tenant"
    if stores.name == "local":
        written = [p for p in stores.root.parent.rglob("*") if p.is_file()]
        assert written == [], f"a refused tenant still wrote {written}"


def test_a_tenant_named_like_the_layout_cannot_reach_untenanted_blobs(store: BlobStore) -> None:
    """Tenant "tenants" (a valid name) gets its own folder, not the others' root."""
    store.put(image_id(23), b"acme", tenant="acme")
    assert store.get(image_id(23), tenant="tenants") is None
    store.put(image_id(23), b"t", tenant="tenants")
    assert store.get(image_id(23), tenant="acme") == b"acme"


def test_signed_urls_name_the_tenants_object(store: BlobStore, stores: _Stores) -> None:
    store.put(image_id(24), b"acme", tenant="acme")
    store.put(image_id(24), b"beta", tenant="beta")
    url = store.url(image_id(24), 300, tenant="beta")
    if not stores.signs_urls:
        assert url is None
        return
    assert url is not None
    assert httpx.get(url, timeout=30).content == b"beta"
