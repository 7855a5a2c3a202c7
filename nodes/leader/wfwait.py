"""A workflow tick's ops, with the slot held back when its schedule waits on upstreams (D296).

The workflow engine writes each tick's execution and slot record in its fenced transaction; a
slot of a schedule with ``depends_on`` or ``not_before`` instead gets its held record and its
waiting key (``cluster.depends_plan.hold_execution``), in the same transaction, and the
dependency waiter (``nodes/leader/depwait.py``) creates the execution when the upstreams are met.
The waiting quota is counted from etcd here (workflow ticks are few)."""

from __future__ import annotations

from typing import Any

from cluster.depends_plan import hold_execution
from cluster.etcd import Etcd
from cluster.keys import Keys
from cluster.slotlog import workflow_slot_job, workflow_tick_ops
from cluster.workflow_store import create_execution_ops
from cluster.workflows import Execution, Workflow


async def workflow_slot_ops(
    etcd: Etcd, keys: Keys, wf: Workflow, ex: Execution, tick_key: str
) -> list[Any]:
    """The execution and its slot record (D234), or the held slot (D296)."""
    if any(s.depends_on or s.not_before for s in wf.schedules):
        mine = await etcd.range(
            keys.waitings(wf.project, workflow_slot_job(wf.name)), count_only=True
        )
        theirs = await etcd.range(keys.waitings(wf.project), count_only=True)
        held = hold_execution(keys, wf, ex, tick_key, waiting=(mine.count, theirs.count))
        if held is not None:
            return held
    return [*create_execution_ops(keys, ex), *workflow_tick_ops(keys, wf, ex, tick_key)]
