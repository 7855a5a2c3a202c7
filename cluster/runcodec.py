"""A run's job snapshot, validated once per distinct content (D450).

Decoding a run record or queue entry (``Run.model_validate_json``, ~21 µs for a trivial run's
1.1 KB alone, 50 µs inside a busy node) spent two thirds of its time on the embedded
``snapshot``: its ~40 fields, nested schedules, the cron and time zone checks and the size check
that encodes the whole document again (``JobSpec._one_action``). Every run of a job carries the
same snapshot until the job changes, so a node validated the same document for every run it
read: each worker that looks at a queue entry its node did not write, the workflow engine, the
deadline tracker, the API's listings.

:func:`snapshot_field` is the validator of ``Run.snapshot`` (and of ``Execution.snapshot``, the
workflow document an execution embeds, D452; each class has its own cache). A snapshot that
arrives as data (a dict: JSON parsed by pydantic, or a dict given to ``model_validate``) is
looked up by its exact content — ``marshal.dumps(value, 2)``, which tells ``1``, ``1.0`` and
``true`` apart, keeps key order and never shares references, so equal bytes mean the same typed
JSON value — and a hit is the object pydantic made from that same content before. A miss is
validated in full by pydantic, as before, and kept only when it validated; content pydantic
refuses is refused every time (nothing invalid is kept). An instance of exactly the class passes
through unchanged (D422). Snapshots are never edited in place (D312, D422), so runs may share
one.

Bounded: at most ``SNAPSHOTS_KEPT`` snapshots and ``SNAPSHOT_BYTES_KEPT`` bytes of keys (a key is
about the size of the document), the oldest dropped first.
"""

from __future__ import annotations

import marshal
import threading
from typing import Any

from pydantic import ValidatorFunctionWrapHandler, WrapValidator

SNAPSHOTS_KEPT = 4096
SNAPSHOT_BYTES_KEPT = 32 << 20


class SnapshotCache:
    """Validated snapshots by the exact content they were validated from."""

    def __init__(
        self, cls: type, kept: int = SNAPSHOTS_KEPT, max_bytes: int = SNAPSHOT_BYTES_KEPT
    ) -> None:
        self.cls = cls
        self.kept = kept
        self.max_bytes = max_bytes
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self._kept: dict[bytes, Any] = {}
        self._lock = threading.Lock()  # a decoding in another thread must not break an eviction

    def __len__(self) -> int:
        return len(self._kept)

    def clear(self) -> None:
        with self._lock:
            self._kept.clear()
            self.bytes = 0

    def validate(self, value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        if type(value) is self.cls:
            return value  # built and validated by this process (D422)
        if type(value) is not dict:
            return handler(value)
        try:
            key = marshal.dumps(value, 2)
        except ValueError:  # not JSON data (a model_validate caller's own objects)
            return handler(value)
        hit = self._kept.get(key)
        if hit is not None:
            self.hits += 1
            return hit
        self.misses += 1
        spec = handler(value)
        if type(spec) is self.cls:
            self._keep(key, spec)
        return spec

    def _keep(self, key: bytes, spec: Any) -> None:
        if len(key) > self.max_bytes:
            return
        with self._lock:
            if key in self._kept:
                return
            while self._kept and (
                len(self._kept) >= self.kept or self.bytes + len(key) > self.max_bytes
            ):
                old = next(iter(self._kept))
                del self._kept[old]
                self.bytes -= len(old)
            self._kept[key] = spec
            self.bytes += len(key)


_CACHES: dict[type, SnapshotCache] = {}


def snapshot_cache(cls: type) -> SnapshotCache:
    """The one cache of the documents of ``cls`` in this process."""
    cache = _CACHES.get(cls)
    if cache is None:
        cache = _CACHES[cls] = SnapshotCache(cls)
    return cache


def snapshot_field(cls: type) -> WrapValidator:
    """The validator of a field holding a ``cls``: instances as they are (D422), data validated
    once per distinct content (D450)."""
    return WrapValidator(snapshot_cache(cls).validate)
