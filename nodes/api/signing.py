"""Node-to-node request signing (security level 1): HMAC-SHA256 with the cluster secret.

The signature covers the method, the path with its query, the SHA-256 of the body, a timestamp, a
random nonce, the sender's id and the receiver's id. A receiver rejects a request addressed to
another node, a timestamp that is not a finite number or lies outside ``WINDOW`` seconds of its own
clock, and a nonce it has already seen within that window, so a captured request can be replayed
neither to the same node nor to another one (each keeps its own nonces, D158) and a changed byte
breaks the signature. Level 0 sends and checks nothing (loopback development only).
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
from collections import OrderedDict
from collections.abc import Mapping

WINDOW = 30.0
H_TIME = "X-Cronmesh-Timestamp"
H_NONCE = "X-Cronmesh-Nonce"
H_SIG = "X-Cronmesh-Signature"
H_NODE = "X-Cronmesh-Node"
H_TO = "X-Cronmesh-To"


def _message(
    method: str, path_qs: str, body: bytes, ts: str, nonce: str, node: str, to: str
) -> bytes:
    body_hash = hashlib.sha256(body).hexdigest()
    return "\n".join([method.upper(), path_qs, body_hash, ts, nonce, node, to]).encode()


def sign(
    secret: bytes, method: str, path_qs: str, body: bytes, now: float, node: str, *, to: str
) -> dict[str, str]:
    """Headers that sign a call from node ``node`` to node ``to``."""
    ts = f"{now:.3f}"
    nonce = secrets.token_hex(16)
    mac = hmac.new(secret, _message(method, path_qs, body, ts, nonce, node, to), hashlib.sha256)
    return {H_TIME: ts, H_NONCE: nonce, H_SIG: mac.hexdigest(), H_NODE: node, H_TO: to}


class NonceCache:
    """Nonces seen within the window (bounded: the oldest go first)."""

    def __init__(self, limit: int = 100_000) -> None:
        self.limit = limit
        self._seen: OrderedDict[str, float] = OrderedDict()

    def add(self, nonce: str, now: float) -> bool:
        """Remember ``nonce``; False when it was already seen within the window."""
        while self._seen:
            _, at = next(iter(self._seen.items()))
            if at >= now - 2 * WINDOW and len(self._seen) < self.limit:
                break
            self._seen.popitem(last=False)
        if nonce in self._seen:
            return False
        self._seen[nonce] = now
        return True


def verify(
    secret: bytes,
    method: str,
    path_qs: str,
    body: bytes,
    headers: Mapping[str, str],
    now: float,
    nonces: NonceCache,
    *,
    me: str,
) -> str | None:
    """None when the request is authentic, fresh and addressed to node ``me``, else the reason
    it is not."""
    ts, nonce, sig = headers.get(H_TIME), headers.get(H_NONCE), headers.get(H_SIG)
    node = headers.get(H_NODE, "")
    if not ts or not nonce or not sig:
        return "unsigned request"
    if not all(v.isascii() for v in (ts, nonce, sig, node)):
        return "malformed signature headers"  # non-ASCII: refused, never compared (a 500 before)
    if headers.get(H_TO) != me:
        return "request addressed to another node"
    try:
        at = float(ts)
    except ValueError:
        return "bad timestamp"
    if not math.isfinite(at):
        return "bad timestamp"
    if abs(now - at) > WINDOW:
        return "timestamp outside the replay window"
    mac = hmac.new(secret, _message(method, path_qs, body, ts, nonce, node, me), hashlib.sha256)
    if not hmac.compare_digest(mac.hexdigest(), sig):
        return "bad signature"
    if not nonces.add(nonce, now):
        return "replayed request"
    return None


class RejectionLog:
    """Whether a refused peer request is worth a warning: the first of each reason in a window
    of ``every`` seconds is; the others are only counted, and the next warning of that reason
    says how many it stood for (D511). Anyone who reaches the port can send unsigned requests;
    a warning each grew the node log without bound. Reasons are ``verify``'s fixed set."""

    def __init__(self, every: float = 60.0) -> None:
        self.every = every
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def admit(self, reason: str, now: float) -> int | None:
        """None: count it only. Else warn, saying this many earlier ones were not logged."""
        last = self._last.get(reason)
        if last is not None and now - last < self.every:
            self._held[reason] = self._held.get(reason, 0) + 1
            return None
        self._last[reason] = now
        return self._held.pop(reason, 0)
