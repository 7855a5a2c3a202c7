"""The workflow engine does not decode its own write of an execution again (D454), on a real etcd.

The engine writes an execution at every step and follows ``executions/`` with a watch. When the
watch delivers the write's event after the transaction's reply, the engine knows the revision
and ignores it; when the event comes first (both travel the same connection, and which the loop
handles first is chance), it decoded the record again (~300 µs of the leader's loop in the
node for a 10-task workflow). The event's bytes are compared with the bytes in flight: the same
bytes are the object written, kept as it is; other bytes are decoded, as any other writer's.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from cluster.etcd import KV, Etcd, Event
from cluster.keys import Keys
from cluster.workflow_store import WorkflowStore
from cluster.workflows import Execution, WorkflowSpec
from tests.integration.test_fencing import P, Rig


@pytest.fixture
async def rig(etcd: Etcd, keys: Keys) -> AsyncIterator[Rig]:
    r = Rig(etcd, keys)
    yield r
    await r.close()


async def test_the_event_of_a_write_in_flight_is_the_object_written(rig, monkeypatch) -> None:
    wfs = WorkflowStore(rig.store)
    spec = WorkflowSpec(
        name="w",
        tasks=[{"name": "t1", "command": "true"}, {"name": "t2", "command": "true"}],
        edges=[["t1", "t2"]],
    )
    await wfs.put_workflow(P, spec)
    ex = await wfs.trigger(P, "w", {})
    ek = (P, ex.id)
    leader = await rig.leader("n1")
    engine = leader.sched.workflows
    await engine._load()
    decoded: list[bytes] = []
    decode = Execution.model_validate_json

    def counted(data: Any, **kw: Any) -> Execution:
        decoded.append(bytes(data))
        return decode(data, **kw)

    monkeypatch.setattr(Execution, "model_validate_json", counted)
    seen: list[Execution] = []
    txn = rig.etcd.txn

    async def event_first(*args: Any, **kw: Any) -> Any:
        res = await txn(*args, **kw)
        kv = await rig.etcd.get(rig.keys.execution(*ek))
        assert kv is not None
        engine._on_exec_event(Event("put", kv))  # the watch's event, before the reply
        seen.append(engine.execs[ek][0])
        return res

    monkeypatch.setattr(rig.etcd, "txn", event_first)
    assert await engine.process(ek) is not None
    assert len(seen) == 1 and decoded == []  # the event was not decoded
    ex_after, rev = engine.execs[ek]
    assert seen[0] is ex_after  # the object the engine wrote, then kept with its revision
    stored = await rig.etcd.get(rig.keys.execution(*ek))
    assert stored is not None and rev == stored.mod_revision
    assert decode(stored.value) == ex_after  # what a decoding would have given
    assert ex_after.status == "running" and ex_after.tasks["t1"].status == "started"
    # another writer's bytes (the API's cancel, say) are decoded as before
    monkeypatch.setattr(rig.etcd, "txn", txn)
    other = ex_after.model_copy(update={"cancel_requested": True})
    put = await rig.etcd.put(rig.keys.execution(*ek), other.model_dump_json())
    value = other.model_dump_json().encode()
    engine._on_exec_event(Event("put", KV(stored.key, value, 0, put, 0, 0)))
    assert decoded == [value] and engine.execs[ek][0].cancel_requested
