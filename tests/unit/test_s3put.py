"""The SigV4 signer of small S3 PUTs, checked against botocore's own signer."""

from __future__ import annotations

import hashlib

import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials

from logstore.s3put import Credentials, _error_code, authorization, signing_key


@pytest.mark.parametrize(
    ("host", "path", "token", "body"),
    [
        ("127.0.0.1:8333", "/bucket/p/default/job/0383/1.log", None, b"hello\n"),
        ("bucket.s3.eu-west-1.amazonaws.com", "/a%20b/%24x.log", "session-token", b""),
        ("minio:9000", "/b/k/\xe9".encode().decode("latin-1"), None, b"\x00\xff" * 100),
    ],
)
def test_authorization_matches_botocore(host, path, token, body):
    from urllib.parse import quote

    path = quote(path, safe="/-_.~%")
    creds = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token)
    digest = hashlib.sha256(body).hexdigest()
    request = AWSRequest(
        method="PUT",
        url=f"http://{host}{path}",
        data=body,
        headers={"Content-Type": "text/plain; charset=utf-8", "X-Amz-Content-SHA256": digest},
    )
    S3SigV4Auth(BotoCredentials(*creds), "s3", "eu-west-1").add_auth(request)
    headers = {
        "host": host,
        "content-type": "text/plain; charset=utf-8",
        "x-amz-content-sha256": digest,
        "x-amz-date": request.headers["X-Amz-Date"],  # the instant botocore signed at
    }
    if token:
        headers["x-amz-security-token"] = token
    assert (
        authorization("PUT", path, headers, creds, "eu-west-1") == request.headers["Authorization"]
    )


def test_signing_key_is_the_documented_derivation():
    # the example of AWS's Signature Version 4 documentation ("Deriving the signing key")
    key = signing_key("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "20120215", "us-east-1", "iam")
    assert key.hex() == "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d"


def test_error_code_from_an_s3_error_document():
    body = b"<?xml version='1.0'?><Error><Code>SlowDown</Code><Message>x</Message></Error>"
    assert _error_code(body) == "SlowDown"
    assert _error_code(b"") == ""
