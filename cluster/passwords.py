"""Password hashing with scrypt (memory-hard), parameters and a random salt recorded per hash.

A hash reads ``scrypt$<n>$<r>$<p>$<salt b64>$<digest b64>``: stored hashes stay verifiable when the
default cost changes, and ``needs_rehash`` tells a login to upgrade an old one. Verification takes
~0.1 s of CPU and 32 MiB: callers on an event loop run it in a thread.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from functools import cache

from cluster.errors import InvalidInput

MIN_PASSWORD = 8
MAX_PASSWORD = 1024


@dataclass(frozen=True, slots=True)
class ScryptParams:
    n: int = 2**15
    r: int = 8
    p: int = 1
    salt_bytes: int = 16
    dklen: int = 32

    @property
    def maxmem(self) -> int:
        return 256 * self.n * self.r * self.p  # 2x what scrypt needs (128 * n * r * p)


DEFAULT = ScryptParams()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4))


def check_password_rules(password: str, field: str = "password") -> None:
    if not isinstance(password, str) or not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise InvalidInput(
            f"password must be {MIN_PASSWORD}..{MAX_PASSWORD} characters long", field=field
        )


def _scrypt(password: str, salt: bytes, params: ScryptParams) -> bytes:
    return hashlib.scrypt(
        password.encode(),
        salt=salt,
        n=params.n,
        r=params.r,
        p=params.p,
        maxmem=params.maxmem,
        dklen=params.dklen,
    )


def hash_password(password: str, params: ScryptParams = DEFAULT) -> str:
    salt = secrets.token_bytes(params.salt_bytes)
    digest = _scrypt(password, salt, params)
    return f"scrypt${params.n}${params.r}${params.p}${_b64(salt)}${_b64(digest)}"


def parse_hash(encoded: str) -> tuple[ScryptParams, bytes, bytes]:
    scheme, n, r, p, salt, digest = encoded.split("$")
    if scheme != "scrypt":
        raise ValueError(f"unknown password hash scheme {scheme!r}")
    raw_salt, raw_digest = _unb64(salt), _unb64(digest)
    params = ScryptParams(int(n), int(r), int(p), len(raw_salt), len(raw_digest))
    return params, raw_salt, raw_digest


def verify_password(password: str, encoded: str) -> bool:
    """Constant-time check of ``password`` against a stored hash; False for a malformed hash."""
    try:
        params, salt, expected = parse_hash(encoded)
        actual = _scrypt(password, salt, params)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


def needs_rehash(encoded: str, params: ScryptParams = DEFAULT) -> bool:
    try:
        current, salt, _ = parse_hash(encoded)
    except ValueError:
        return True
    return (current.n, current.r, current.p, len(salt)) != (
        params.n,
        params.r,
        params.p,
        params.salt_bytes,
    )


@cache
def dummy_hash() -> str:
    """A hash of nothing anybody knows: logins for unknown users verify against it, so a wrong
    user name costs as much time as a wrong password (the answer does not reveal who exists)."""
    return hash_password(secrets.token_urlsafe(16))
