"""The S3 log store (AWS, MinIO, SeaweedFS, Ceph…): boto3 calls run in threads.

Configured by ``--log-store s3://bucket/prefix``; endpoint, region and credentials come from the
node config (``s3_endpoint``, ``s3_region``, ``s3_access_key_id``…: a node reads the keys from
``AWS_*`` variables or ``*_FILE`` files at start and hands them over explicitly) or boto3's usual
sources (``AWS_ENDPOINT_URL``, ``AWS_REGION``, ``~/.aws``, instance or pod identity). Path-style
addressing is the default, since self-hosted servers rarely have wildcard DNS for buckets.
See ``LogStore`` for the methods.
"""

from __future__ import annotations

import asyncio
import http.client
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from logstore.s3put import PutFailed, SignedPut
from logstore.store import ObjectMissing, StoreUnavailable, check_key

T = TypeVar("T")
_MISSING = {"NoSuchKey", "404", "NotFound"}
_PROXIES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy")
TEXT = "text/plain; charset=utf-8"


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> ``("bucket", "some/prefix")``."""
    if not url.startswith("s3://"):
        raise ValueError(f"{url!r} is not an s3:// URL")
    bucket, _, prefix = url[5:].partition("/")
    if not bucket:
        raise ValueError(f"{url!r} names no bucket")
    return bucket, prefix.strip("/")


@dataclass(frozen=True)
class S3Credentials:
    """Keys given to the store explicitly (from the node config), so the node need not keep them
    in its environment, where every child process would inherit them."""

    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)


class S3Store:
    def __init__(
        self,
        url: str,
        *,
        endpoint: str | None = None,
        region: str | None = None,
        addressing_style: str = "path",
        credentials: S3Credentials | None = None,
    ) -> None:
        self.bucket, self.prefix = parse_s3_url(url)
        config = Config(
            s3={"addressing_style": addressing_style},
            retries={"max_attempts": 2, "mode": "standard"},
            connect_timeout=3,
            read_timeout=15,
            max_pool_connections=16,
        )
        if credentials is not None:
            session = boto3.session.Session(
                aws_access_key_id=credentials.access_key_id,
                aws_secret_access_key=credentials.secret_access_key,
                aws_session_token=credentials.session_token,
            )
        else:
            session = boto3.session.Session()
        self.client: Any = session.client(
            "s3", endpoint_url=endpoint or None, region_name=region or None, config=config
        )
        # small objects (most logs, segments) skip boto3: one signed request (D135)
        credentials = session.get_credentials()
        self._signed: SignedPut | None = None
        if credentials is not None and not any(os.environ.get(v) for v in _PROXIES):
            self._signed = SignedPut(
                self.client.meta.endpoint_url,
                self.bucket,
                self.client.meta.region_name or "us-east-1",
                credentials,
                addressing_style=addressing_style,
                timeout=15.0,
            )
        self.transfer = TransferConfig(
            multipart_threshold=16 * 1024 * 1024,
            multipart_chunksize=8 * 1024 * 1024,
            max_concurrency=2,  # per upload; the uploader runs several uploads at once
        )
        # parts read ahead into memory per upload (s3transfer's default, 10, held 80 MiB per big
        # log; a node's memory must stay flat however big a log is); not a boto3 argument
        self.transfer.max_in_memory_upload_chunks = 2

    def _key(self, key: str, *, prefix: bool = False) -> str:
        """The object key of ``key`` under the store's prefix; a key that would climb out of the
        prefix (``..``, a leading ``/``…) is refused, also for servers that normalize paths."""
        check_key(key, prefix=prefix)
        return f"{self.prefix}/{key}" if self.prefix else key

    def url(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    async def _call(self, fn: Callable[[], T]) -> T:
        def guarded() -> T:
            try:
                return fn()
            except ClientError as exc:
                code = str(exc.response.get("Error", {}).get("Code", ""))
                if code in _MISSING:
                    raise ObjectMissing(code) from None
                raise StoreUnavailable(f"S3 refused: {exc}") from None
            except BotoCoreError as exc:
                raise StoreUnavailable(f"S3 unreachable: {exc}") from None

        return await asyncio.to_thread(guarded)

    async def put_file(self, key: str, path: Path) -> None:
        await self._call(
            lambda: self.client.upload_file(
                str(path),
                self.bucket,
                self._key(key),
                ExtraArgs={"ContentType": TEXT},
                Config=self.transfer,
            )
        )

    async def put_bytes(self, key: str, data: bytes) -> None:
        if self._signed is not None:
            await asyncio.to_thread(self._put_signed, self._signed, self._key(key), data)
            return
        await self._call(
            lambda: self.client.put_object(
                Bucket=self.bucket,
                Key=self._key(key),
                Body=data,
                ContentType=TEXT,
            )
        )

    @staticmethod
    def _put_signed(signed: SignedPut, key: str, data: bytes) -> None:
        try:
            signed.put(key, data, TEXT)
        except PutFailed as exc:
            raise StoreUnavailable(f"S3 refused: {exc}") from None
        except (OSError, http.client.HTTPException) as exc:
            raise StoreUnavailable(f"S3 unreachable: {exc!r}") from None

    def close(self) -> None:
        """Close the kept-alive connections of small PUTs (boto3 keeps its own pool)."""
        if self._signed is not None:
            self._signed.close()

    async def read(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        if start < 0:
            rng = f"bytes={start}"
        elif end is None:
            rng = f"bytes={start}-" if start else ""
        elif end <= start:
            return b""
        else:
            rng = f"bytes={start}-{end - 1}"

        def get() -> bytes:
            kw: dict[str, Any] = {"Bucket": self.bucket, "Key": self._key(key)}
            if rng:
                kw["Range"] = rng
            try:
                return bytes(self.client.get_object(**kw)["Body"].read())
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") == "InvalidRange":
                    return b""
                raise

        return await self._call(get)

    async def size(self, key: str) -> int:
        head = await self._call(
            lambda: self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        )
        return int(head["ContentLength"])

    async def keys(self, prefix: str) -> list[str]:
        full = self._key(prefix, prefix=True)
        strip = len(self.prefix) + 1 if self.prefix else 0

        def walk() -> list[str]:
            out: list[str] = []
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=full
            )
            for page in pages:
                out += [obj["Key"][strip:] for obj in page.get("Contents", [])]
            return sorted(out)

        return await self._call(walk)

    async def delete(self, keys: list[str]) -> None:
        for i in range(0, len(keys), 1000):
            batch = [{"Key": self._key(k)} for k in keys[i : i + 1000]]
            await self._call(
                lambda batch=batch: self.client.delete_objects(  # type: ignore[misc]
                    Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True}
                )
            )

    async def check(self) -> None:
        await self._call(lambda: self.client.head_bucket(Bucket=self.bucket))
