"""Group commit of independent guarded transactions (D137).

A worker writes two transactions per run: its claim and its completion. Each is small, and each
cost the node a gRPC call and etcd a raft entry of its own; at a few hundred runs per second those
per-call costs were most of both processes' CPU. :class:`TxnBatcher` sends the transactions that
are waiting as *one* etcd transaction whose operations are the waiting transactions, nested: each
keeps its own guards and its own success and failure branches, and each caller gets its own
answer, exactly as if it had been sent alone. The outer transaction has no guards, so one
caller's failed compare never affects another's.

Nothing waits for a batch to fill: a transaction submitted while none is in flight goes out on
the next turn of the event loop (so the ones submitted in the same turn travel together); while
``inflight`` batches are out, new ones wait and leave together when one comes back. Under a light
load every transaction goes alone and at once; under a heavy one, batches grow by themselves.
Once a full batch waits (``max_items``), waiting longer cannot make it bigger: full batches go
while fewer than ``full_inflight`` are out, every one that may go in the same turn (D466; a
loaded node's turns last tens to hundreds of milliseconds, and two batches per reply's turn were
what bounded its completions).

A transaction may *linger* (``linger`` s, D353): it waits up to that long for others to go
with, and leaves at once with any batch that goes before. Completions of runs linger (a run's
end is recorded a few milliseconds later, its times are taken before): each write transaction
costs etcd far more than an operation in it, and completions otherwise trickle in one by one as
processes exit. Claims and everything else never wait.

Limits: at most ``max_items`` nested transactions (etcd refuses more than ``--max-txn-ops``, 128
by default, per level) and about ``max_bytes`` per batch (etcd's request limit is 1.5 MiB). etcd
also refuses a transaction that writes one key twice, so a transaction writing a key that one
already in the batch writes waits for the next batch — and one writing a key that a batch in
flight writes waits until that batch is back (D466: etcd may apply two batches in flight in
either order, so writes of one key are applied in the order they were submitted). A range delete
goes alone, only when no batch is in flight, and nothing goes while it is (D354: with two batches
in flight, a write submitted after it could be applied before it).

Errors are the batch's: when the outer transaction fails (etcd unreachable, lease gone, reply
lost) every caller in it gets that exception, and handles it as it would its own (an unknown
outcome is resolved by reading back, never by blind retry). A batch etcd refuses as a request
(``Rejected``: nothing applied) is sent again one transaction at a time, so only the
unacceptable one fails. A transaction whose caller was cancelled while it waited is never sent.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aetcd import rpc

from cluster.etcd import Etcd, Rejected, TxnResult

MAX_ITEMS = 64
MAX_BYTES = 512 * 1024
INFLIGHT = 2
FULL_INFLIGHT = 8  # a full batch goes while fewer than this are out (D466)


@dataclass(slots=True)
class _Item:
    request: Any  # rpc.TxnRequest
    keys: frozenset[bytes] | None  # keys it writes; None: a range delete (goes alone)
    size: int
    future: asyncio.Future[TxnResult] = field(repr=False)
    urgent: bool = True  # False: it lingers (waits for others, or for the linger timer)


def _written(ops: Iterable[Any]) -> frozenset[bytes] | None:
    keys: set[bytes] = set()
    for op in ops:
        if op.HasField("request_put"):
            keys.add(op.request_put.key)
        elif op.HasField("request_delete_range"):
            if op.request_delete_range.range_end:
                return None
            keys.add(op.request_delete_range.key)
        elif op.HasField("request_txn"):
            inner = _written([*op.request_txn.success, *op.request_txn.failure])
            if inner is None:
                return None
            keys |= inner
    return frozenset(keys)


class TxnBatcher:
    def __init__(
        self,
        etcd: Etcd,
        *,
        max_items: int = MAX_ITEMS,
        max_bytes: int = MAX_BYTES,
        inflight: int = INFLIGHT,
        full_inflight: int = FULL_INFLIGHT,
        observe: Callable[[int], None] | None = None,
    ) -> None:
        self.etcd = etcd
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.inflight = inflight
        self.full_inflight = max(inflight, full_inflight)
        self.observe = observe  # called with each batch's size (metrics)
        self._waiting: list[_Item] = []
        self._out = 0
        self._scheduled = False
        self._urgent = 0  # waiting transactions that do not linger
        self._due = False  # the lingering ones have waited long enough
        self._timer: asyncio.TimerHandle | None = None
        self._barrier = False  # a range delete is in flight: nothing else goes until it is back
        self._flying: set[bytes] = set()  # keys written by the batches out (one each, D466)

    async def txn(
        self,
        compare: Iterable[Any],
        success: Iterable[Any],
        failure: Iterable[Any] = (),
        *,
        linger: float = 0.0,
    ) -> TxnResult:
        """Like :meth:`Etcd.txn`, sent together with the others waiting. The result's
        ``revision`` is the batch's (every write in it has that revision). ``linger`` > 0: it
        may wait that many seconds for others to go with (D353)."""
        request = rpc.TxnRequest(
            compare=list(compare), success=list(success), failure=list(failure)
        )
        loop = asyncio.get_running_loop()
        item = _Item(
            request,
            _written([*request.success, *request.failure]),
            request.ByteSize(),
            loop.create_future(),
            urgent=linger <= 0,
        )
        self._waiting.append(item)
        if item.urgent:
            self._urgent += 1
        elif self._timer is None and not self._due:
            self._timer = loop.call_later(linger, self._lingered, loop)
        self._schedule(loop)
        return await item.future

    def _lingered(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        self._due = True
        self._schedule(loop)

    def _ready(self) -> bool:
        """A batch may leave now: something waiting may go (an urgent one, or lingering ones
        whose time is up), nothing holds the way (a range delete out), and fewer than
        ``inflight`` batches are out — or fewer than ``full_inflight`` while a full batch waits:
        waiting longer would not make it bigger (D466)."""
        if not self._waiting or not (self._urgent > 0 or self._due) or self._barrier:
            return False
        if self._out < self.inflight:
            return True
        return self._out < self.full_inflight and len(self._waiting) >= self.max_items

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        if not self._scheduled and self._ready():
            self._scheduled = True
            loop.call_soon(self._flush, loop)

    def _take(self) -> list[_Item]:
        """The waiting transactions that go in the next batch, in order; a range delete goes
        alone, and one that writes a key of an earlier waiting one goes after it."""
        batch: list[_Item] = []
        rest: list[_Item] = []
        keys: set[bytes] = set()  # written by the batch or by one left waiting
        size = 0
        held = False  # a range delete is left waiting: nothing after it may pass it
        for i, item in enumerate(self._waiting):
            if len(batch) >= self.max_items:  # full: the rest waits as it is, unread (D466)
                rest += self._waiting[i:]
                break
            if item.future.done():
                continue  # its caller was cancelled while it waited: never sent
            if held:
                fits = False
            elif not batch:
                # a range delete goes only when nothing is in flight (one sent earlier could be
                # applied after it, one sent later before it)
                fits = item.keys is not None or self._out == 0
            elif batch[0].keys is None or item.keys is None:
                fits = False
            else:
                fits = (
                    len(batch) < self.max_items
                    and size + item.size <= self.max_bytes
                    and not keys & item.keys
                )
            # a key a batch out writes: after that batch is back, never beside it (D466)
            fits = fits and (item.keys is None or self._flying.isdisjoint(item.keys))
            (batch if fits else rest).append(item)
            keys |= item.keys or frozenset()
            size += item.size if fits else 0
            held = held or (not fits and item.keys is None)
        self._waiting = rest
        self._urgent = sum(1 for item in rest if item.urgent and not item.future.done())
        if len(rest) == self._urgent:  # none lingers any more: the next one waits afresh
            self._due = False
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        return batch

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        """Every batch that may leave leaves in this turn of the loop (D466): under load a turn
        is long, and one batch per turn was a cap of its own."""
        self._scheduled = False
        while self._ready():
            batch = self._take()
            if not batch:
                return
            self._out += 1
            self._barrier = batch[0].keys is None
            # A fresh context: the batch belongs to no caller (an audit observer set by one API
            # request must not journal another's writes).
            loop.create_task(self._send(batch), context=contextvars.Context())
            # Its keys are out before it runs (it starts on a later turn). One batch out at most
            # writes a key (D466: _take passes none that is out); should that ever fail, the
            # batch still goes and its callers get their answers.
            for item in batch:
                if item.keys:
                    assert self._flying.isdisjoint(item.keys), "a key in two batches out"
                    self._flying |= item.keys

    async def _send(self, batch: list[_Item]) -> None:
        try:
            await self._deliver(batch)
        finally:
            self._out -= 1
            if batch[0].keys is None:
                self._barrier = False
            for item in batch:
                self._flying -= item.keys or frozenset()
            self._schedule(asyncio.get_running_loop())

    async def _deliver(self, batch: list[_Item]) -> None:
        try:
            if self.observe is not None:
                self.observe(len(batch))
            if len(batch) == 1:
                res = await self.etcd.txn_request(batch[0].request)
                _settle(batch[0].future, result=res)
                return
            ops = [rpc.RequestOp(request_txn=item.request) for item in batch]
            try:
                res = await self.etcd.txn_request(rpc.TxnRequest(success=ops))
            except Rejected:
                # Nothing was applied, but the refusal may be one member's doing: each goes
                # alone, so one unacceptable transaction fails only its own caller.
                await asyncio.gather(*(self._deliver([item]) for item in batch))
                return
            for item, resp in zip(batch, res.responses, strict=True):
                inner = resp.response_txn
                result = TxnResult(bool(inner.succeeded), res.revision, list(inner.responses))
                _settle(item.future, result=result)
        except BaseException as exc:
            for item in batch:
                _settle(item.future, error=exc)
            if not isinstance(exc, Exception):
                raise


def _settle(
    future: asyncio.Future[TxnResult],
    *,
    result: TxnResult | None = None,
    error: BaseException | None = None,
) -> None:
    if future.done():
        return  # its caller was cancelled; the write's outcome is read back by whoever needs it
    if error is not None:
        future.set_exception(error)
    else:
        assert result is not None
        future.set_result(result)
