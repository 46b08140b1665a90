"""Storage settings are checked at start; the factory picks the configured store."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import ValidationError

from sdserve.config import Settings
from sdserve.domain.errors import InvalidRequest
from sdserve.storage.base import StorageUnavailable
from sdserve.storage.factory import build_blobs
from sdserve.storage.local import LocalBlobStore
from sdserve.storage.memory import MemoryBlobStore
from sdserve.storage.urls import api_image_url, image_url

IMG = "0123456789abcdef0123456789abcdef.webp"


def test_s3_without_a_bucket_is_refused_with_the_variable_named() -> None:
    with pytest.raises(ValidationError, match="SDSERVE_S3_BUCKET is required"):
        Settings(blob_backend="s3")


def test_s3_bucket_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SDSERVE_BLOB_BACKEND", "s3")
    monkeypatch.setenv("SDSERVE_S3_BUCKET", "images")
    monkeypatch.setenv("SDSERVE_IMAGE_URLS", "presigned")
    settings = Settings()
    assert (settings.blob_backend, settings.s3_bucket, settings.image_urls) == (
        "s3",
        "images",
        "presigned",
    )


@pytest.mark.parametrize("backend", ["local", "memory"])
def test_presigned_urls_need_the_s3_store(backend: str) -> None:
    with pytest.raises(ValidationError, match="SDSERVE_IMAGE_URLS=presigned needs"):
        Settings(blob_backend=backend, image_urls="presigned")


@pytest.mark.parametrize("ttl", [0, 7 * 24 * 3600 + 1])
def test_presigned_ttl_is_bounded_by_sigv4(ttl: int) -> None:
    with pytest.raises(ValidationError, match="presigned_url_ttl_seconds"):
        Settings(presigned_url_ttl_seconds=ttl)


def test_unknown_backend_is_refused() -> None:
    with pytest.raises(ValidationError, match="blob_backend"):
        Settings(blob_backend="ftp")


def test_factory_builds_local_under_the_images_dir(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    store = build_blobs(make_settings(images_dir=tmp_path / "imgs"))
    assert isinstance(store, LocalBlobStore)
    store.put(IMG, b"x")
    assert (tmp_path / "imgs" / IMG[:2] / IMG).read_bytes() == b"x"


def test_factory_builds_memory(make_settings: Callable[..., Settings]) -> None:
    assert isinstance(build_blobs(make_settings(blob_backend="memory")), MemoryBlobStore)


def test_missing_boto3_names_the_extra(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "boto3", None)  # makes `import boto3` fail
    monkeypatch.delitem(sys.modules, "sdserve.storage.s3", raising=False)
    settings = make_settings(blob_backend="s3", s3_bucket="images")
    with pytest.raises(StorageUnavailable, match=r"pip install 'sdserve\[s3\]'"):
        build_blobs(settings)


def test_api_links_use_the_public_base_url(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(public_base_url="https://sd.example.com")
    assert api_image_url(settings, IMG) == f"https://sd.example.com/v1/images/{IMG}"
    assert image_url(make_settings(), MemoryBlobStore(), IMG) == f"/v1/images/{IMG}"


def test_links_refuse_invalid_ids(make_settings: Callable[..., Settings]) -> None:
    with pytest.raises(InvalidRequest):
        image_url(make_settings(), MemoryBlobStore(), "../etc/passwd")
