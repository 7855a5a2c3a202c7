"""The values the etcd client answers with: keys, ranges, watch events, transaction results."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal


@dataclass(frozen=True, slots=True)
class KV:
    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int

    @classmethod
    def from_pb(cls, kv: Any) -> KV:
        return cls(
            kv.key.decode(),
            bytes(kv.value),
            kv.create_revision,
            kv.mod_revision,
            kv.version,
            kv.lease,
        )


@dataclass(frozen=True, slots=True)
class Range:
    kvs: list[KV]
    revision: int  # the store revision the range was read at
    more: bool
    count: int


@dataclass(frozen=True, slots=True)
class Event:
    kind: Literal["put", "delete"]
    kv: KV  # for a delete: the key and the deletion's mod_revision; value is empty


@dataclass(frozen=True, slots=True)
class WatchBatch:
    events: list[Event]
    revision: int  # every change up to it has been delivered: the last event's revision (D364)


@dataclass(frozen=True, slots=True)
class TxnResult:
    succeeded: bool
    revision: int
    responses: list[Any]  # raw ResponseOp messages, in the order of the ops that ran

    def range_kvs(self, index: int) -> list[KV]:
        return [KV.from_pb(kv) for kv in self.responses[index].response_range.kvs]


def prefix_end(prefix: str) -> bytes:
    """The range end that selects every key starting with ``prefix``."""
    raw = bytearray(prefix.encode())
    for i in reversed(range(len(raw))):
        if raw[i] < 0xFF:
            raw[i] += 1
            return bytes(raw[: i + 1])
    return b"\0"
