"""API and session tokens: random, shown once, stored only as a SHA-256 digest.

A token has 256 random bits, so a fast digest is enough (nothing to brute-force); the first 16 hex
digits of the digest are the token's id and key in etcd, the full digest is compared in constant
time. Tokens given by configuration (the bootstrap admin token) follow the same rule.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

PREFIX = "cm_"
MIN_CONFIGURED = 20


def new_token() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def token_id(token: str) -> str:
    return digest(token)[:16]


def matches(token: str, stored_digest: str) -> bool:
    return hmac.compare_digest(digest(token), stored_digest)
