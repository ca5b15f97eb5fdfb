"""Blob storage in an S3-compatible bucket (AWS, MinIO, R2, ...), with presigned GET URLs.

boto3 blocks, so every call runs in a worker thread; the one client is thread-safe and made once.
Errors become core.errors: a missing object is NotFound; anything that says the store cannot be
used (unreachable endpoint, refused credentials, missing bucket, server errors) is Unavailable,
with a message that names the kind of failure and never an endpoint, key or credential.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import boto3
from boto3.exceptions import Boto3Error
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from adapters.blobs.local import check_content_type, check_expires_in
from core.blobs import check_key
from core.errors import NotFound, Unavailable

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

T = TypeVar("T")

_MISSING = frozenset({"NoSuchKey", "404", "NotFound"})
_ALREADY_MINE = frozenset({"BucketAlreadyOwnedByYou"})
_MB = 1024 * 1024


class S3BlobStore:
    """core.blobs.BlobStore on an S3 bucket. Keys are stored as `prefix + key`.

    Credentials default to boto3's chain (AWS_* variables, profiles, instance roles) unless both
    `access_key_id` and `secret_access_key` are given. With an `endpoint_url` (MinIO and other
    S3-compatible stores) requests use path-style addressing.
    """

    def __init__(
        self,
        bucket: str,
        *,
        region: str | None,
        endpoint_url: str | None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        prefix: str = "",
    ) -> None:
        if (access_key_id is None) != (secret_access_key is None):
            raise ValueError("give both access_key_id and secret_access_key, or neither")
        if prefix:
            prefix = check_key(prefix.strip("/")) + "/"
        self.bucket = bucket
        self.region = region
        self.prefix = prefix
        config = Config(
            signature_version="s3v4",
            connect_timeout=5,
            read_timeout=60,
            retries={"max_attempts": 3, "mode": "standard"},
            s3={"addressing_style": "path" if endpoint_url else "auto"},
            # Checksums only where S3 requires them: S3-compatible stores vary in what they accept.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        session = boto3.session.Session(
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            region_name=region,
        )
        self._client: S3Client = session.client("s3", endpoint_url=endpoint_url, config=config)
        self._transfer = TransferConfig(
            multipart_threshold=16 * _MB, multipart_chunksize=16 * _MB, max_concurrency=4
        )
        self._closed = False

    def _key(self, key: str) -> str:
        return self.prefix + check_key(key)

    async def _call(self, func: Callable[[], T]) -> T:
        """Run one blocking boto3 call in a thread, translating its errors."""
        try:
            return await asyncio.to_thread(func)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", "unknown"))
            if code in _MISSING:
                raise NotFound("blob not found") from exc
            if code == "NoSuchBucket":
                raise Unavailable("object store bucket does not exist") from exc
            raise Unavailable(f"object store error ({code})") from exc
        except (BotoCoreError, Boto3Error) as exc:
            raise Unavailable(f"object store unreachable ({type(exc).__name__})") from exc

    # -- the port -----------------------------------------------------------------------------

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        s3_key = self._key(key)
        check_content_type(content_type)
        await self._call(
            lambda: self._client.put_object(
                Bucket=self.bucket, Key=s3_key, Body=data, ContentType=content_type
            )
        )

    async def put_file(self, key: str, path: Path, content_type: str) -> None:
        s3_key = self._key(key)
        extra = {"ContentType": check_content_type(content_type)}
        await self._call(
            lambda: self._client.upload_file(
                str(path), self.bucket, s3_key, ExtraArgs=extra, Config=self._transfer
            )
        )

    async def get(self, key: str) -> bytes:
        s3_key = self._key(key)

        def read() -> bytes:
            body = self._client.get_object(Bucket=self.bucket, Key=s3_key)["Body"]
            try:
                return body.read()
            finally:
                body.close()

        return await self._call(read)

    async def exists(self, key: str) -> bool:
        s3_key = self._key(key)
        try:
            await self._call(lambda: self._client.head_object(Bucket=self.bucket, Key=s3_key))
        except NotFound:
            return False
        return True

    async def delete(self, key: str) -> None:
        s3_key = self._key(key)
        await self._call(lambda: self._client.delete_object(Bucket=self.bucket, Key=s3_key))

    async def url(self, key: str, expires_in: int) -> str:
        params = {"Bucket": self.bucket, "Key": self._key(key)}
        expires_in = check_expires_in(expires_in)
        # Presigning is local, but resolving credentials may hit the network (instance roles).
        return await self._call(
            lambda: self._client.generate_presigned_url(
                "get_object", Params=params, ExpiresIn=expires_in
            )
        )

    async def ping(self) -> None:
        try:
            await self._call(lambda: self._client.head_bucket(Bucket=self.bucket))
        except NotFound:
            raise Unavailable("object store bucket does not exist") from None

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            await asyncio.to_thread(self._client.close)

    # -- development helpers ------------------------------------------------------------------

    async def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist (development and tests; production buckets
        are provisioned by the operator)."""
        params: dict[str, Any] = {"Bucket": self.bucket}
        if self.region and self.region != "us-east-1":
            params["CreateBucketConfiguration"] = {"LocationConstraint": self.region}

        def create() -> None:
            try:
                self._client.create_bucket(**params)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") not in _ALREADY_MINE:
                    raise

        await self._call(create)
