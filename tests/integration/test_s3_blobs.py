"""What only the S3 store does: bucket checks at start, key layout, object metadata,
pre-signed URLs through the factory and the URL helper. Against a real moto server."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from sdserve.config import Settings
from sdserve.storage.base import IMAGE_CACHE_CONTROL, StorageUnavailable
from sdserve.storage.factory import build_blobs
from sdserve.storage.s3 import S3BlobStore, make_client
from sdserve.storage.urls import image_url
from sdserve.testing import free_port
from tests.s3server import MotoServer, unique_bucket

IMG = "0123456789abcdef0123456789abcdef.png"


@pytest.fixture
def client(s3_env: MotoServer) -> Any:
    return make_client(s3_env.endpoint, None)


def s3_settings(make_settings: Callable[..., Settings], server: MotoServer, **kw: Any) -> Settings:
    values: dict[str, Any] = {
        "blob_backend": "s3",
        "s3_bucket": unique_bucket(),
        "s3_endpoint_url": server.endpoint,
        "s3_create_bucket": True,
    }
    values.update(kw)
    return make_settings(**values)


def test_missing_bucket_is_one_clear_error_unless_creation_is_allowed(client: Any) -> None:
    bucket = unique_bucket()
    with pytest.raises(StorageUnavailable) as info:
        S3BlobStore(client, bucket).ensure_bucket(create=False)
    assert bucket in info.value.message
    assert "SDSERVE_S3_CREATE_BUCKET" in info.value.message
    store = S3BlobStore(client, bucket)
    store.ensure_bucket(create=True)
    client.head_bucket(Bucket=bucket)  # it exists now
    store.ensure_bucket(create=True)  # and a second start (another pod) is fine
    store.put(IMG, b"ok")
    assert store.get(IMG) == b"ok"


def test_bucket_is_created_in_the_configured_region(s3_env: MotoServer) -> None:
    client = make_client(s3_env.endpoint, "eu-west-1")
    bucket = unique_bucket()
    S3BlobStore(client, bucket).ensure_bucket(create=True)
    location = client.get_bucket_location(Bucket=bucket)["LocationConstraint"]
    assert location == "eu-west-1"


def test_keys_live_under_the_prefix_with_a_two_character_shard(client: Any) -> None:
    bucket = unique_bucket()
    a = S3BlobStore(client, bucket, "tenant-a")
    b = S3BlobStore(client, bucket, "/tenant-b/")
    a.ensure_bucket(create=True)
    a.put(IMG, b"a")
    b.put(IMG, b"b")
    keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"])
    assert keys == [f"tenant-a/01/{IMG}", f"tenant-b/01/{IMG}"]
    assert a.get(IMG) == b"a" and b.get(IMG) == b"b"
    assert a.delete(IMG) is True
    assert b.get(IMG) == b"b", "a prefix must isolate stores sharing a bucket"


def test_objects_carry_their_media_type_and_cache_policy(client: Any) -> None:
    store = S3BlobStore(client, unique_bucket())
    store.ensure_bucket(create=True)
    store.put("0123456789abcdef0123456789abcdef.jpeg", b"\xff\xd8")
    head = client.head_object(Bucket=store.bucket, Key=store.key(IMG.replace("png", "jpeg")))
    assert head["ContentType"] == "image/jpeg"
    # As /v1/images: private (no shared cache) and short (a deleted image soon goes).
    assert head["CacheControl"] == IMAGE_CACHE_CONTROL
    assert "immutable" not in head["CacheControl"]


def test_a_vanished_bucket_is_an_error_not_a_missing_image(client: Any) -> None:
    """NoSuchBucket must not read as "no such image" (None / 404 to clients)."""
    store = S3BlobStore(client, unique_bucket())
    store.ensure_bucket(create=True)
    client.delete_bucket(Bucket=store.bucket)
    with pytest.raises(StorageUnavailable, match="NoSuchBucket"):
        store.get(IMG)
    with pytest.raises(StorageUnavailable):
        store.put(IMG, b"x")


def test_unreachable_endpoint_fails_at_start(
    make_settings: Callable[..., Settings], s3_env: MotoServer
) -> None:
    settings = make_settings(
        blob_backend="s3", s3_bucket="b", s3_endpoint_url=f"http://127.0.0.1:{free_port()}"
    )
    with pytest.raises(StorageUnavailable, match="cannot reach S3"):
        build_blobs(settings)


def test_factory_builds_a_working_store(
    make_settings: Callable[..., Settings], s3_env: MotoServer
) -> None:
    settings = s3_settings(make_settings, s3_env, s3_prefix="sd/")
    store = build_blobs(settings)
    store.put(IMG, b"via factory")
    assert build_blobs(settings).get(IMG) == b"via factory"


def test_presigned_urls_name_the_public_endpoint_and_download(
    make_settings: Callable[..., Settings], s3_env: MotoServer
) -> None:
    # The service talks to 127.0.0.1; clients are told "localhost" (as compose tells
    # them localhost:9000 while the containers use minio:9000).
    public = f"http://localhost:{s3_env.port}"
    settings = s3_settings(
        make_settings,
        s3_env,
        s3_public_endpoint_url=public,
        image_urls="presigned",
        presigned_url_ttl_seconds=120,
    )
    store = build_blobs(settings)
    store.put(IMG, b"png bytes")
    url = image_url(settings, store, IMG)
    assert urlsplit(url).netloc == f"localhost:{s3_env.port}"
    assert "X-Amz-Expires=120" in url
    response = httpx.get(url, timeout=30)
    assert response.status_code == 200 and response.content == b"png bytes"


def test_api_mode_links_to_the_api_even_for_s3(
    make_settings: Callable[..., Settings], s3_env: MotoServer
) -> None:
    settings = s3_settings(make_settings, s3_env, public_base_url="https://sd.example.com")
    store = build_blobs(settings)
    assert image_url(settings, store, IMG) == f"https://sd.example.com/v1/images/{IMG}"
