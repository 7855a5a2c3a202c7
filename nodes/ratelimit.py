"""Login attempt limits per user name and per client address (sliding window, per node).

An attempt is counted *before* its password is verified (``reserve``): concurrent guesses each take
a slot, so 40 guesses sent at once cannot all pass a check that only counted finished failures. A
success gives its slot back and clears the user's failures (``succeeded``); an attempt that never
reached verification (the hashing pool was full) gives its slot back too (``release``). Pure: every
call takes ``now``.

Addresses are counted by what one client controls (``address_key``, D200): an IPv6 client
usually holds a whole /64 (SLAAC, privacy addresses; a rented host gets 2^64 of them), so a per-
/128 limit would let it spray guesses from a fresh address each time. IPv6 is counted per /64, an
IPv4-mapped IPv6 address as its IPv4 address.
"""

from __future__ import annotations

import ipaddress
from collections import deque
from dataclasses import dataclass, field

IPV6_PREFIX = 64  # what one IPv6 client is assumed to hold


def address_key(address: str) -> str:
    """The login limit's key for a client address: an IPv6 address's /64 network, an IPv4
    (or IPv4-mapped IPv6) address itself; anything unparsable as given."""
    try:
        ip = ipaddress.ip_address(address.strip().strip("[]").split("%", 1)[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, IPV6_PREFIX), strict=False))
    return str(ip)


@dataclass
class _Window:
    limit: int
    window: float
    hits: dict[str, deque[float]] = field(default_factory=dict)
    max_keys: int = 100_000

    def _trim(self, key: str, now: float) -> deque[float]:
        q = self.hits.get(key)
        if q is None:
            return deque()
        while q and q[0] <= now - self.window:
            q.popleft()
        if not q:
            del self.hits[key]
        return q

    def retry_after(self, key: str, now: float) -> float | None:
        q = self._trim(key, now)
        if len(q) >= self.limit:
            return max(0.0, q[0] + self.window - now)
        return None

    def hit(self, key: str, now: float) -> None:
        if key not in self.hits and len(self.hits) >= self.max_keys:
            self.hits.pop(next(iter(self.hits)))  # the oldest key goes first
        self.hits.setdefault(key, deque()).append(now)

    def unhit(self, key: str, at: float) -> None:
        """Give back the slot taken at ``at`` (if the window still holds it)."""
        q = self.hits.get(key)
        if q is None:
            return
        try:
            q.remove(at)
        except ValueError:
            return
        if not q:
            del self.hits[key]

    def clear(self, key: str) -> None:
        self.hits.pop(key, None)


@dataclass(frozen=True, slots=True)
class Attempt:
    """A reserved login attempt: who, from where, and when its slot was taken."""

    user: str
    address: str
    at: float


class LoginLimiter:
    def __init__(self, per_user: int = 10, per_address: int = 50, window: float = 300.0) -> None:
        self.users = _Window(per_user, window)
        self.addresses = _Window(per_address, window)

    def retry_after(self, user: str, address: str, now: float) -> float | None:
        """Seconds to wait before another attempt for this user or address; None: go ahead."""
        waits = [
            w
            for w in (
                self.users.retry_after(user.lower(), now),
                self.addresses.retry_after(address_key(address), now),
            )
            if w is not None
        ]
        return max(waits) if waits else None

    def reserve(self, user: str, address: str, now: float) -> Attempt | float:
        """Take a slot for one attempt, counted as a failure until told otherwise; or the
        seconds to wait when the user or the address has none left."""
        wait = self.retry_after(user, address, now)
        if wait is not None:
            return wait
        self.failed(user, address, now)
        return Attempt(user.lower(), address_key(address), now)

    def succeeded(self, attempt: Attempt) -> None:
        """The password was right: the slot is given back and the user's failures cleared."""
        self.addresses.unhit(attempt.address, attempt.at)
        self.users.clear(attempt.user)

    def release(self, attempt: Attempt) -> None:
        """The attempt was never verified (refused for load): it does not count."""
        self.addresses.unhit(attempt.address, attempt.at)
        self.users.unhit(attempt.user, attempt.at)

    def failed(self, user: str, address: str, now: float) -> None:
        self.users.hit(user.lower(), now)
        self.addresses.hit(address_key(address), now)
