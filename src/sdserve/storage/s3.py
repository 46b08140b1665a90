"""S3 (or S3-compatible: MinIO, Ceph, R2, moto) blob store on boto3.

Credentials come from boto3's standard chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY
/ AWS_SESSION_TOKEN, AWS_PROFILE, web identity / IRSA, instance roles), never from
Settings, so no secret is ever part of the configuration dump. A PUT is atomic in S3:
readers see the old object or the new one, never a part of it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

from sdserve.storage.base import (
    IMAGE_CACHE_CONTROL,
    StorageUnavailable,
    blob_key,
    checked_image_id,
    media_type,
    tenant_prefix,
)

try:
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError
except ImportError as exc:  # pragma: no cover - exercised through the factory's message
    raise ImportError("SDSERVE_BLOB_BACKEND=s3 needs boto3: pip install 'sdserve[s3]'") from exc

T = TypeVar("T")
_MISSING = {"404", "NoSuchKey", "NotFound"}


class _Raise:
    """Marks "a missing key is an error too" (None is a real answer for get)."""


_RAISE = _Raise()


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def make_client(endpoint_url: str | None, region: str | None) -> Any:
    """A thread-safe client. boto3 addresses a custom endpoint path-style
    (``host/bucket/key``), as MinIO and most S3-compatible servers expect."""
    config = Config(
        signature_version="s3v4",  # pre-signed URLs: SigV4 (at most 7 days)
        connect_timeout=5,
        read_timeout=60,
        retries={"mode": "standard", "max_attempts": 4},
        max_pool_connections=32,  # the API reads from a thread pool
    )
    session = boto3.session.Session()  # sessions are not thread-safe; clients are
    return session.client(
        "s3", endpoint_url=endpoint_url or None, region_name=region or None, config=config
    )


class S3BlobStore:
    """Objects live at ``<prefix><blob_key>`` (``<id[:2]>/<id>``, under
    ``tenants/<tenant>/`` for a tenant's): the two hex characters spread keys over
    S3's per-prefix request-rate partitions, as the local store spreads files."""

    def __init__(
        self, client: Any, bucket: str, prefix: str = "", presign_client: Any = None
    ) -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        # Signing needs no network; a second client lets URLs name the host clients
        # reach (e.g. localhost:9000) while the service talks to minio:9000.
        self.presign_client = presign_client or client

    def key(self, image_id: str, tenant: str | None = None) -> str:
        return self.prefix + blob_key(image_id, tenant)

    def _call(self, what: str, fn: Callable[[], T], if_missing: T | _Raise = _RAISE) -> T:
        """Run one S3 request; a missing key gives ``if_missing`` (when given), any
        other failure StorageUnavailable naming the operation and the bucket."""
        try:
            return fn()
        except ClientError as exc:
            if _code(exc) in _MISSING and not isinstance(if_missing, _Raise):
                return if_missing
            raise StorageUnavailable(
                f"S3 {what} in bucket {self.bucket!r} failed: {_code(exc)} {exc}"
            ) from exc
        except BotoCoreError as exc:
            raise StorageUnavailable(f"S3 {what} in bucket {self.bucket!r} failed: {exc}") from exc

    def ensure_bucket(self, create: bool) -> None:
        """Check the bucket at start-up, so a typo fails the process, not the first job."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
            return
        except ClientError as exc:
            code = _code(exc)
            if code in ("403", "AccessDenied"):
                raise StorageUnavailable(
                    f"no access to S3 bucket {self.bucket!r}: check the credentials "
                    "(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or the pod's role)"
                ) from exc
            if code not in _MISSING and code != "NoSuchBucket":
                raise StorageUnavailable(f"S3 bucket {self.bucket!r}: {code} {exc}") from exc
        except BotoCoreError as exc:
            endpoint = self.client.meta.endpoint_url
            raise StorageUnavailable(f"cannot reach S3 at {endpoint}: {exc}") from exc
        if not create:
            raise StorageUnavailable(
                f"S3 bucket {self.bucket!r} does not exist at "
                f"{self.client.meta.endpoint_url}: create it, or set "
                "SDSERVE_S3_CREATE_BUCKET=true to let sdserve create it"
            )
        self._create_bucket()

    def _create_bucket(self) -> None:
        region = self.client.meta.region_name
        params: dict[str, Any] = {"Bucket": self.bucket}
        if region and region != "us-east-1":  # us-east-1 refuses an explicit constraint
            params["CreateBucketConfiguration"] = {"LocationConstraint": region}
        try:
            self.client.create_bucket(**params)
        except ClientError as exc:
            if _code(exc) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise StorageUnavailable(
                    f"cannot create S3 bucket {self.bucket!r}: {_code(exc)} {exc}"
                ) from exc
        except BotoCoreError as exc:
            raise StorageUnavailable(f"cannot create S3 bucket {self.bucket!r}: {exc}") from exc

    def put(self, image_id: str, data: bytes, tenant: str | None = None) -> None:
        key = self.key(image_id, tenant)
        self._call(
            f"put {key}",
            lambda: self.client.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=bytes(data),
                ContentType=media_type(checked_image_id(image_id)),
                CacheControl=IMAGE_CACHE_CONTROL,
            ),
        )

    def get(self, image_id: str, tenant: str | None = None) -> bytes | None:
        key = self.key(image_id, tenant)

        def read() -> bytes | None:
            response = self.client.get_object(Bucket=self.bucket, Key=key)
            return cast(bytes, response["Body"].read())

        return self._call(f"get {key}", read, if_missing=None)

    def exists(self, image_id: str, tenant: str | None = None) -> bool:
        key = self.key(image_id, tenant)

        def head() -> bool:
            self.client.head_object(Bucket=self.bucket, Key=key)
            return True

        return self._call(f"head {key}", head, if_missing=False)

    def delete(self, image_id: str, tenant: str | None = None) -> bool:
        # S3's DELETE succeeds whether or not the key exists, so "was it there" needs a
        # HEAD first; two racing deleters may both see True, which callers tolerate.
        existed = self.exists(image_id, tenant)
        key = self.key(image_id, tenant)
        self._call(f"delete {key}", lambda: self.client.delete_object(Bucket=self.bucket, Key=key))
        return existed

    def delete_tenant(self, tenant: str) -> int:
        prefix = self.prefix + tenant_prefix(tenant)

        def drop() -> int:
            count = 0
            pages = self.client.get_paginator("list_objects_v2")
            for page in pages.paginate(Bucket=self.bucket, Prefix=prefix):
                objects = [{"Key": o["Key"]} for o in page.get("Contents", [])]
                if objects:  # at most 1000 a page, as delete_objects takes
                    self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": objects})
                    count += len(objects)
            return count

        return self._call(f"delete {prefix}*", drop)

    def url(self, image_id: str, ttl_seconds: int, tenant: str | None = None) -> str | None:
        key = self.key(image_id, tenant)
        return cast(
            str,
            self._call(
                f"presign {key}",
                lambda: self.presign_client.generate_presigned_url(
                    "get_object",
                    Params={"Bucket": self.bucket, "Key": key},
                    ExpiresIn=int(ttl_seconds),
                ),
            ),
        )
