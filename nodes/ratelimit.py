"""Login attempt limits per user name and per client address (sliding window, per node).

Only failures count; a success clears the user's failures. Pure: every call takes ``now``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


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

    def clear(self, key: str) -> None:
        self.hits.pop(key, None)


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
                self.addresses.retry_after(address, now),
            )
            if w is not None
        ]
        return max(waits) if waits else None

    def failed(self, user: str, address: str, now: float) -> None:
        self.users.hit(user.lower(), now)
        self.addresses.hit(address, now)

    def succeeded(self, user: str) -> None:
        self.users.clear(user.lower())
