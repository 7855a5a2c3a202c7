"""Encryption of project secrets at rest: AES-256-GCM with a key ring (pure, no I/O).

A key ring is the text of the secrets key file: one key per line, the base64 of 32 random bytes
(``cronmesh secret keygen`` prints one); blank lines and ``#`` comments are ignored. The **first**
key encrypts; every key decrypts. A key's id is derived from the key itself (``key_id``), so two
different keys never share an id and the operator names nothing. Each stored value records the id
of the key that sealed it, which is what rotation looks at (docs/security.md, "Secrets").

The authenticated data binds a ciphertext to its project, its name and its key id: a value copied
to another project's or name's key does not decrypt (``SecretUnreadable``), nor does one whose key
id was edited.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from cluster.errors import CronmeshError, InvalidInput, Unavailable

KEY_BYTES = 32
NONCE_BYTES = 12
AAD_VERSION = b"cronmesh-secret-v1"
MAX_KEYS = 16


class SecretsKeyMissing(Unavailable):
    """This node has no secrets key file, so it can neither seal nor open values."""

    code = "secrets_key_missing"


def require_ring(ring: KeyRing | None, sealed: str) -> KeyRing:
    """The node's key ring, or ``SecretsKeyMissing`` saying what needs it (``sealed``: e.g.
    "project secrets", "hook secrets") and how to give the node one."""
    if ring is None:
        raise SecretsKeyMissing(
            f"this node has no secrets key ({sealed} are sealed with it): start it with "
            "--secrets-key-file (CRONMESH_SECRETS_KEY_FILE)"
        )
    return ring


class SecretUnreadable(CronmeshError):
    """A stored value cannot be opened: its key is not in this node's ring, or it was altered
    (or copied from another project or name)."""

    code = "secret_unreadable"
    status = 500


@dataclass(frozen=True, slots=True)
class Sealed:
    key_id: str
    nonce: bytes
    ciphertext: bytes  # includes the 16-byte GCM tag


def key_id(key: bytes) -> str:
    """A short public name for a key (a hash of it: nothing about the key can be learned)."""
    return "k" + hashlib.sha256(b"cronmesh secrets key id\0" + key).hexdigest()[:12]


def new_key() -> str:
    """A fresh key as a key-file line."""
    return base64.b64encode(os.urandom(KEY_BYTES)).decode()


def _aad(project: str, name: str, kid: str) -> bytes:
    return b"\0".join((AAD_VERSION, project.encode(), name.encode(), kid.encode()))


class KeyRing:
    """The keys a node holds: ``current`` seals, all of ``keys`` open."""

    def __init__(self, keys: list[bytes]) -> None:
        if not keys:
            raise InvalidInput("the secrets key file holds no key", field="secrets_key_file")
        self.keys: dict[str, bytes] = {}
        for key in keys:
            self.keys.setdefault(key_id(key), key)
        self.current = key_id(keys[0])
        self._ciphers = {kid: AESGCM(key) for kid, key in self.keys.items()}

    @classmethod
    def parse(cls, text: str) -> KeyRing:
        keys: list[bytes] = []
        for n, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            try:  # standard or URL-safe alphabet, padding optional
                key = base64.b64decode(line + "=" * (-len(line) % 4), altchars=b"-_", validate=True)
            except (binascii.Error, ValueError):
                key = b""
            if len(key) != KEY_BYTES:
                raise InvalidInput(
                    f"secrets key file line {n}: not the base64 of {KEY_BYTES} bytes "
                    "(`cronmesh secret keygen` prints a valid line)",
                    field="secrets_key_file",
                )
            keys.append(key)
        if len(keys) > MAX_KEYS:
            raise InvalidInput(
                f"the secrets key file holds {len(keys)} keys; at most {MAX_KEYS}",
                field="secrets_key_file",
            )
        return cls(keys)

    @property
    def ids(self) -> list[str]:
        return list(self.keys)

    def seal(self, project: str, name: str, value: bytes) -> Sealed:
        nonce = os.urandom(NONCE_BYTES)
        kid = self.current
        ct = self._ciphers[kid].encrypt(nonce, value, _aad(project, name, kid))
        return Sealed(kid, nonce, ct)

    def open(self, project: str, name: str, sealed: Sealed) -> bytes:
        cipher = self._ciphers.get(sealed.key_id)
        if cipher is None:
            raise SecretUnreadable(
                f"secret {name!r} is encrypted with key {sealed.key_id}, which this node's "
                f"secrets key file does not hold (it holds {', '.join(self.ids)})"
            )
        try:
            return cipher.decrypt(
                sealed.nonce, sealed.ciphertext, _aad(project, name, sealed.key_id)
            )
        except InvalidTag:
            raise SecretUnreadable(
                f"secret {name!r} does not decrypt: altered, or copied from another project or name"
            ) from None
