"""Change observation: while ``OBSERVER`` is set (the audit log sets it per API request), every
put and delete asks etcd for the previous value and reports (key, before, after)."""

from __future__ import annotations

import contextvars
from typing import Any, Protocol


class ChangeObserver(Protocol):
    closed: bool  # set when its request ended (tasks it spawned inherit the variable)

    def add(self, key: str, before: bytes | None, after: bytes | None) -> None: ...

    def journal(self, ops: list[Any]) -> Any | None:
        """An op to run in the same transaction as ``ops`` (the audit entry's draft), or None."""


# While set (the audit log sets it per API request), every put and delete asks etcd for the
# previous value and reports (key, before, after) here.
OBSERVER: contextvars.ContextVar[ChangeObserver | None] = contextvars.ContextVar(
    "cronmesh_etcd_observer", default=None
)


def active_observer() -> ChangeObserver | None:
    observer = OBSERVER.get()
    return None if observer is None or observer.closed else observer


def observe_ops(ops: list[Any]) -> None:
    for op in ops:
        if op.HasField("request_put"):
            op.request_put.prev_kv = True
        elif op.HasField("request_delete_range"):
            op.request_delete_range.prev_kv = True
        elif op.HasField("request_txn"):
            observe_ops(list(op.request_txn.success))
            observe_ops(list(op.request_txn.failure))


def report(observer: ChangeObserver, ops: list[Any], responses: list[Any]) -> None:
    for op, resp in zip(ops, responses, strict=False):
        if op.HasField("request_put"):
            put = resp.response_put
            prev = bytes(put.prev_kv.value) if put.HasField("prev_kv") else None
            observer.add(op.request_put.key.decode(), prev, bytes(op.request_put.value))
        elif op.HasField("request_delete_range"):
            for kv in resp.response_delete_range.prev_kvs:
                observer.add(kv.key.decode(), bytes(kv.value), None)
        elif op.HasField("request_txn"):
            inner, txn = op.request_txn, resp.response_txn
            ran = inner.success if txn.succeeded else inner.failure
            report(observer, list(ran), list(txn.responses))
