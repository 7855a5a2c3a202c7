"""Group commit (D137) against a real etcd: transactions submitted together travel as one, and
each keeps its own guards and its own answer."""

from __future__ import annotations

import asyncio

import pytest

from cluster.etcd import Compare, LeaseGone, Op, Rejected
from cluster.txnbatch import TxnBatcher


async def test_waiting_transactions_share_one_revision_and_keep_their_own_guards(etcd, prefix):
    sizes: list[int] = []
    batcher = TxnBatcher(etcd, observe=sizes.append)
    await etcd.put(f"{prefix}taken", "x")
    before = (await etcd.range(prefix)).revision

    results = await asyncio.gather(
        batcher.txn([Compare.absent(f"{prefix}a")], [Op.put(f"{prefix}a", "1")]),
        # its guard fails: its failure branch runs, the others are untouched
        batcher.txn(
            [Compare.absent(f"{prefix}taken")],
            [Op.put(f"{prefix}never", "1")],
            [Op.get(f"{prefix}taken")],
        ),
        batcher.txn([Compare.absent(f"{prefix}b")], [Op.put(f"{prefix}b", "2")]),
    )

    assert [r.succeeded for r in results] == [True, False, True]
    assert results[1].range_kvs(0)[0].value == b"x"
    assert sizes == [3]
    # one transaction: one revision for both writes, and it is the one each caller was told
    a, b = await etcd.get(f"{prefix}a"), await etcd.get(f"{prefix}b")
    assert a is not None and b is not None
    assert a.create_revision == b.create_revision == results[0].revision == before + 1
    assert await etcd.get(f"{prefix}never") is None


async def test_one_alone_goes_at_once_and_unbatched(etcd, prefix):
    sizes: list[int] = []
    batcher = TxnBatcher(etcd, observe=sizes.append)
    res = await batcher.txn([], [Op.put(f"{prefix}k", "v")], [])
    assert res.succeeded and sizes == [1]
    kv = await etcd.get(f"{prefix}k")
    assert kv is not None and kv.mod_revision == res.revision


async def test_batches_respect_the_item_limit_and_a_key_written_twice_waits(etcd, prefix):
    sizes: list[int] = []
    batcher = TxnBatcher(etcd, max_items=4, inflight=1, observe=sizes.append)
    puts = [batcher.txn([], [Op.put(f"{prefix}n{i}", str(i))]) for i in range(10)]
    # the same key twice: etcd would refuse the whole batch; the second waits for the next one
    twice = [batcher.txn([], [Op.put(f"{prefix}same", v)]) for v in ("first", "second")]
    results = await asyncio.gather(*puts, *twice)

    assert all(r.succeeded for r in results)
    assert sum(sizes) == 12 and max(sizes) <= 4
    same = await etcd.get(f"{prefix}same")
    assert same is not None and same.value == b"second"  # submitted in order, applied in order
    assert results[-1].revision > results[-2].revision
    assert len((await etcd.range(f"{prefix}n")).kvs) == 10


async def test_a_range_delete_goes_alone(etcd, prefix):
    sizes: list[int] = []
    batcher = TxnBatcher(etcd, observe=sizes.append)
    await etcd.put(f"{prefix}d/1", "x")
    results = await asyncio.gather(
        batcher.txn([], [Op.put(f"{prefix}p1", "1")]),
        batcher.txn([], [Op.delete(f"{prefix}d/", prefix=True)]),
        batcher.txn([], [Op.put(f"{prefix}p2", "2")]),
    )
    assert all(r.succeeded for r in results)
    assert sizes == [1, 1, 1]  # alone, and what came after it waits for it
    assert results[1].responses[0].response_delete_range.deleted == 1


async def test_a_failed_batch_fails_each_caller_with_its_error(etcd, prefix):
    batcher = TxnBatcher(etcd)
    lease = await etcd.grant(5)
    await etcd.revoke(lease)
    results = await asyncio.gather(
        batcher.txn([], [Op.put(f"{prefix}x", "1", lease)]),
        batcher.txn([], [Op.put(f"{prefix}y", "1")]),
        return_exceptions=True,
    )
    # a put bound to a revoked lease makes etcd refuse the whole transaction: both callers hear it
    assert all(isinstance(r, LeaseGone) for r in results), results
    assert await etcd.get(f"{prefix}y") is None


@pytest.mark.parametrize("n", [200])
async def test_many_concurrent_callers_all_answered(etcd, prefix, n):
    batcher = TxnBatcher(etcd)
    results = await asyncio.gather(
        *(
            batcher.txn([Compare.absent(f"{prefix}c{i}")], [Op.put(f"{prefix}c{i}", "v")])
            for i in range(n)
        )
    )
    assert all(r.succeeded for r in results)
    assert len({r.revision for r in results}) < n  # they did share transactions
    assert (await etcd.range(f"{prefix}c", count_only=True)).count == n


async def test_a_refused_batch_goes_again_one_by_one_only_the_bad_one_fails(etcd, prefix):
    sizes: list[int] = []
    batcher = TxnBatcher(etcd, observe=sizes.append)
    bad = [Op.put(f"{prefix}dup", "1"), Op.put(f"{prefix}dup", "2")]  # etcd refuses this one
    good, refused = await asyncio.gather(
        batcher.txn([], [Op.put(f"{prefix}good", "1")]),
        batcher.txn([], bad),
        return_exceptions=True,
    )
    assert isinstance(refused, Rejected)
    assert not isinstance(good, BaseException) and good.succeeded
    assert await etcd.get(f"{prefix}good") is not None
    assert sizes == [2, 1, 1]  # the batch, then each alone


async def test_a_caller_cancelled_while_waiting_never_has_its_write_sent(etcd, prefix):
    batcher = TxnBatcher(etcd, inflight=1)
    first = asyncio.ensure_future(batcher.txn([], [Op.put(f"{prefix}first", "1")]))
    for _ in range(3):
        await asyncio.sleep(0)  # the first batch is out: the next one waits for it
    waiting = asyncio.ensure_future(batcher.txn([], [Op.put(f"{prefix}cancelled", "1")]))
    await asyncio.sleep(0)
    waiting.cancel()
    await first
    after = await batcher.txn([], [Op.put(f"{prefix}after", "1")])  # the queue moves on
    assert after.succeeded and waiting.cancelled()
    assert await etcd.get(f"{prefix}cancelled") is None


async def test_nothing_passes_a_waiting_range_delete(etcd, prefix):
    batcher = TxnBatcher(etcd)
    # a put, the range delete (cannot join the put's batch), then a put inside its range: the
    # last must be applied after the delete, or the delete would remove it
    await asyncio.gather(
        batcher.txn([], [Op.put(f"{prefix}other", "1")]),
        batcher.txn([], [Op.delete(f"{prefix}r/", prefix=True)]),
        batcher.txn([], [Op.put(f"{prefix}r/kept", "1")]),
    )
    assert await etcd.get(f"{prefix}r/kept") is not None


async def test_lingering_transactions_wait_for_each_other(etcd, prefix):
    """Completions linger (D353): two submitted apart travel as one batch, sent when the first
    one's linger is over."""
    sizes: list[int] = []
    batcher = TxnBatcher(etcd, observe=sizes.append)
    first = asyncio.ensure_future(batcher.txn([], [Op.put(f"{prefix}a", "1")], linger=0.5))
    await asyncio.sleep(0.05)  # well within the linger: it has not left
    assert not first.done() and sizes == []
    second = asyncio.ensure_future(batcher.txn([], [Op.put(f"{prefix}b", "2")], linger=0.5))
    a, b = await asyncio.gather(first, second)
    assert a.succeeded and b.succeeded and sizes == [2] and a.revision == b.revision


async def test_a_lingering_transaction_leaves_at_once_with_an_urgent_one(etcd, prefix):
    sizes: list[int] = []
    batcher = TxnBatcher(etcd, observe=sizes.append)
    lingering = asyncio.ensure_future(batcher.txn([], [Op.put(f"{prefix}a", "1")], linger=60))
    await asyncio.sleep(0)
    urgent = await asyncio.wait_for(batcher.txn([], [Op.put(f"{prefix}b", "2")]), 10)
    done = await asyncio.wait_for(lingering, 10)  # not the 60 s of its linger
    assert sizes == [2] and done.revision == urgent.revision
    # the linger timer went with it: the next lingering one waits afresh, then goes alone
    again = await asyncio.wait_for(batcher.txn([], [Op.put(f"{prefix}c", "3")], linger=0.05), 10)
    assert again.succeeded and sizes == [2, 1]


async def test_a_range_delete_in_flight_is_passed_by_nothing(etcd, prefix):
    """D354: with two batches in flight, the put after a range delete was sent while the delete
    was out, and etcd applied it first about one time in ten (so the delete removed it). Fifty
    rounds: the old batcher lost one with a probability above 99 %."""
    batcher = TxnBatcher(etcd)
    for i in range(50):
        base = f"{prefix}{i}/"
        await asyncio.gather(
            batcher.txn([], [Op.put(f"{base}other", "1")]),
            batcher.txn([], [Op.delete(f"{base}r/", prefix=True)]),
            batcher.txn([], [Op.put(f"{base}r/kept", "1")]),
        )
        assert await etcd.get(f"{base}r/kept") is not None, f"round {i}"
    # and the other way round: a put sent before a range delete is never applied after it
    for i in range(50):
        base = f"{prefix}x{i}/"
        await asyncio.gather(
            batcher.txn([], [Op.put(f"{base}r/gone", "1")]),
            batcher.txn([], [Op.put(f"{base}other", "1")]),
            batcher.txn([], [Op.delete(f"{base}r/", prefix=True)]),
        )
        assert await etcd.get(f"{base}r/gone") is None, f"round {i}"


def count_out(etcd, monkeypatch):
    """The batches etcd is answering at once, at most (the real calls, counted)."""
    real = etcd.txn_request
    seen = {"out": 0, "peak": 0}

    async def counted(req):
        seen["out"] += 1
        seen["peak"] = max(seen["peak"], seen["out"])
        try:
            return await real(req)
        finally:
            seen["out"] -= 1

    monkeypatch.setattr(etcd, "txn_request", counted)
    return seen


async def test_full_batches_leave_together_past_the_inflight_limit(etcd, prefix, monkeypatch):
    """D466: waiting cannot make a full batch bigger, so full batches go at once (up to
    ``full_inflight``), all in one turn of the loop; a batch that is not full still waits for
    one of the ``inflight`` places."""
    seen = count_out(etcd, monkeypatch)
    sizes: list[int] = []
    batcher = TxnBatcher(etcd, max_items=4, inflight=1, full_inflight=3, observe=sizes.append)
    results = await asyncio.gather(
        *(batcher.txn([], [Op.put(f"{prefix}n{i}", str(i))]) for i in range(14))
    )
    assert all(r.succeeded for r in results)
    assert sizes == [4, 4, 4, 2] and seen["peak"] == 3  # before D466: one batch out at a time
    assert len({r.revision for r in results[:12]}) == 3 and results[13].revision > max(
        r.revision for r in results[:12]
    )


async def test_a_key_written_by_a_batch_in_flight_waits_for_it(etcd, prefix, monkeypatch):
    """D466: with several batches out, one writing a key a batch in flight writes goes only once
    that batch is back, so writes of a key are applied in the order they were submitted."""
    seen = count_out(etcd, monkeypatch)
    sizes: list[int] = []
    batcher = TxnBatcher(etcd, max_items=2, inflight=1, full_inflight=4, observe=sizes.append)
    for i in range(20):
        same = f"{prefix}same{i}"
        first, _, second, *_ = await asyncio.gather(
            batcher.txn([], [Op.put(same, "first")]),
            batcher.txn([], [Op.put(f"{prefix}a{i}/1", "1")]),
            batcher.txn([], [Op.put(same, "second")]),
            *(batcher.txn([], [Op.put(f"{prefix}a{i}/{j}", "1")]) for j in range(2, 5)),
        )
        kv = await etcd.get(same)
        assert kv is not None and kv.value == b"second", f"round {i}"
        assert second.revision > first.revision
    # [first, a1] and [a2, a3] out together, [a4] beside them; "second" alone once [first, a1]
    # is back (before D466 it went at once in [second, a2], beside the batch writing "first")
    assert sizes[:4] == [2, 2, 1, 1] and seen["peak"] == 3


async def test_a_key_in_two_batches_out_is_reported_and_its_callers_still_get_answers(
    etcd, prefix, monkeypatch
):
    """D466's rule, asserted where the keys go out: a ``_take`` that let a key of a batch out
    through again (as without the rule) makes ``_flush`` fail loudly, and every caller still
    gets its answer (the batch was on its way; nothing hangs)."""
    take = TxnBatcher._take

    def blind(self):  # a _take that does not see the keys out
        out = set(self._flying)
        self._flying.clear()
        try:
            return take(self)
        finally:
            self._flying |= out

    monkeypatch.setattr(TxnBatcher, "_take", blind)
    loop = asyncio.get_running_loop()
    reported: list[BaseException] = []
    loop.set_exception_handler(lambda _loop, ctx: reported.append(ctx["exception"]))
    try:
        batcher = TxnBatcher(etcd, max_items=2, inflight=1, full_inflight=4)
        async with asyncio.timeout(10):
            results = await asyncio.gather(
                batcher.txn([], [Op.put(f"{prefix}same", "first")]),
                batcher.txn([], [Op.put(f"{prefix}a1", "1")]),
                batcher.txn([], [Op.put(f"{prefix}same", "second")]),
                *(batcher.txn([], [Op.put(f"{prefix}a{j}", "1")]) for j in range(2, 5)),
            )
    finally:
        loop.set_exception_handler(None)
    assert all(r.succeeded for r in results)
    assert [str(e) for e in reported] == ["a key in two batches out"]
    assert all(isinstance(e, AssertionError) for e in reported)
