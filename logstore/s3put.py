"""Small S3 PUTs without boto3's machinery: one SigV4-signed request on a kept-alive connection.

Every short run that prints something ends with one ``PutObject`` of a few hundred bytes. Through
boto3 that costs the node 1.7-2.4 ms of CPU (its event hooks, parameter validation,
serialisation, retry handler, response parsing), and botocore's signer with its HTTP session
alone still 1.2 ms; the request itself is a few headers and an HMAC chain. This module signs the
request itself (AWS Signature Version 4, header-based, payload hashed) and sends it with
``http.client`` on a small pool of kept-alive connections, from a worker thread.

Only small bodies go this way (logs up to 2 MiB, segments); credentials still come from boto3's
usual chain (environment, ``~/.aws``, instance or pod identity), frozen per request so refreshed
credentials are picked up. When a proxy is configured in the environment the store keeps using
boto3 (``http.client`` does not speak to proxies on its own).
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import os
import queue
import socket
import ssl
import time
from collections.abc import Mapping
from typing import NamedTuple
from urllib.parse import quote, urlsplit

from logstore.store import check_key

ALGORITHM = "AWS4-HMAC-SHA256"


class Credentials(NamedTuple):
    access_key: str
    secret_key: str
    token: str | None = None


def signing_key(secret: str, date: str, region: str, service: str = "s3") -> bytes:
    """The derived key of Signature Version 4 for one day, region and service."""
    key = hmac.digest(f"AWS4{secret}".encode(), date.encode(), "sha256")
    for part in (region, service, "aws4_request"):
        key = hmac.digest(key, part.encode(), "sha256")
    return key


def authorization(
    method: str,
    path: str,
    headers: Mapping[str, str],
    creds: Credentials,
    region: str,
    key: bytes | None = None,
) -> str:
    """The ``Authorization`` header for a request whose headers are all signed.

    ``headers`` must hold ``host``, ``x-amz-date`` and ``x-amz-content-sha256`` (names in lower
    case); ``path`` is already URI-encoded; there is no query string. ``key`` is the day's
    signing key when the caller caches it.
    """
    amz_date = headers["x-amz-date"]
    date = amz_date[:8]
    names = sorted(headers)
    canonical = "\n".join(
        [
            method,
            path,
            "",  # the query string
            "".join(f"{n}:{' '.join(headers[n].split())}\n" for n in names),
            ";".join(names),
            headers["x-amz-content-sha256"],
        ]
    )
    scope = f"{date}/{region}/s3/aws4_request"
    to_sign = f"{ALGORITHM}\n{amz_date}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
    key = key or signing_key(creds.secret_key, date, region)
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    return (
        f"{ALGORITHM} Credential={creds.access_key}/{scope}, "
        f"SignedHeaders={';'.join(names)}, Signature={signature}"
    )


class PutFailed(Exception):
    """The store answered with an error (status and S3 error code in the message)."""


class SignedPut:
    """``put(key, body, content_type)`` into one bucket over a pool of kept-alive connections
    (thread-safe)."""

    def __init__(
        self,
        endpoint: str,
        bucket: str,
        region: str,
        credentials: object,
        *,
        addressing_style: str = "path",
        timeout: float = 15.0,
        pool: int = 8,
    ) -> None:
        parts = urlsplit(endpoint)
        self.https = parts.scheme == "https"
        virtual = addressing_style == "virtual"
        self.host = f"{bucket}.{parts.netloc}" if virtual else parts.netloc
        self.base = "/" if virtual else f"/{bucket}/"
        self.region = region
        self.timeout = timeout
        self._credentials = credentials  # botocore credentials: get_frozen_credentials()
        self._idle: queue.LifoQueue[http.client.HTTPConnection] = queue.LifoQueue(pool)
        self._key: tuple[str, str, bytes] | None = None  # (day, secret, signing key)
        self._ssl = ssl.create_default_context(cafile=os.environ.get("AWS_CA_BUNDLE") or None)

    def _creds(self) -> Credentials:
        frozen = self._credentials.get_frozen_credentials()  # type: ignore[attr-defined]
        return Credentials(frozen.access_key, frozen.secret_key, frozen.token)

    def _connect(self, host: str) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection
        if self.https:
            conn = http.client.HTTPSConnection(host, timeout=self.timeout, context=self._ssl)
        else:
            conn = http.client.HTTPConnection(host, timeout=self.timeout)
        conn.connect()
        assert conn.sock is not None
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn

    def put(self, key: str, body: bytes, content_type: str) -> None:
        """PUT ``key`` (its full object key, inside the bucket): a key with ``.``/``..`` or
        empty segments is refused, since servers may normalize the URL path (D160)."""
        check_key(key)
        host, path = self.host, self.base + quote(key, safe="/-_.~")
        creds = self._creds()
        amz_date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        headers = {
            "host": host,
            "content-type": content_type,
            "x-amz-content-sha256": hashlib.sha256(body).hexdigest(),
            "x-amz-date": amz_date,
        }
        if creds.token:
            headers["x-amz-security-token"] = creds.token
        day = amz_date[:8]
        if self._key is None or self._key[:2] != (day, creds.secret_key):
            self._key = (day, creds.secret_key, signing_key(creds.secret_key, day, self.region))
        headers["authorization"] = authorization(
            "PUT", path, headers, creds, self.region, self._key[2]
        )
        headers["content-length"] = str(len(body))
        for fresh in (False, True):  # a kept-alive connection the server closed: once more
            conn = None if fresh else self._take()
            reused = conn is not None
            try:
                conn = conn or self._connect(host)
                conn.request("PUT", path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
            except (OSError, http.client.HTTPException):
                if conn is not None:
                    conn.close()
                if reused:
                    continue
                raise
            if resp.will_close:
                conn.close()
            else:
                self._give(conn)
            if resp.status >= 300:
                raise PutFailed(f"{resp.status} {_error_code(data)}".strip())
            return

    def _take(self) -> http.client.HTTPConnection | None:
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            return None

    def _give(self, conn: http.client.HTTPConnection) -> None:
        try:
            self._idle.put_nowait(conn)
        except queue.Full:
            conn.close()

    def close(self) -> None:
        while (conn := self._take()) is not None:
            conn.close()


def _error_code(body: bytes) -> str:
    start = body.find(b"<Code>")
    end = body.find(b"</Code>")
    return body[start + 6 : end].decode(errors="replace") if 0 <= start < end else ""
