"""One workflow execution's next step, decided without I/O (``now`` is an argument).

The leader's engine reads what it needs (its cache of executions, the records of finished task
runs) and calls these in order on a copy of the execution: :func:`admitted` (flow control for a
queued execution), :func:`fold_finished` (the outcome of finished task runs copied in),
:func:`step` (``cluster.dag.advance`` applied: tasks failed upstream or cancelled, task runs to
create within one transaction's budget, the execution's status). It then writes the copy and the
runs in one fenced transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import datetime

from cluster.dag import Graph, admit, advance
from cluster.models import Run
from cluster.runs import CREATE_RUN_OPS
from cluster.store import MAX_TXN_OPS
from cluster.workflows import Execution, result_size, stored_result

TXN_BYTES = 1024 * 1024


def admitted(ex: Execution, others: Iterable[Execution], reserved: set[str]) -> bool:
    """May the queued execution ``ex`` start? ``others``: the unfinished executions known (``ex``
    among them or not); ``reserved``: ids of its workflow's executions admitted by a write still
    in flight."""
    wk = (ex.project, ex.workflow)
    others = list(others)
    queued = [
        (e.snapshot.priority, e.id)
        for e in others
        if e.status == "queued" and (e.project, e.workflow) == wk and not e.cancel_requested
    ]
    running = sum(1 for e in others if e.status == "running" and (e.project, e.workflow) == wk)
    running += len(reserved - {ex.id})
    return ex.id in admit(queued, running, ex.snapshot.max_active)


def fold_finished(
    ex: Execution, done: Mapping[str, str], runs: Mapping[str, Run]
) -> datetime | None:
    """Copy the outcome of finished task runs into ``ex`` (in place). ``done``: task name → run id
    of the started tasks whose run finished; ``runs``: the records read, by id (a missing one is a
    lost task). Answers when the newest of them finished."""
    newest: datetime | None = None
    used = ex.result_bytes()
    for name, run_id in done.items():
        state = ex.tasks[name]
        run = runs.get(run_id or "")
        if run is None:
            state.status = "lost"
            state.error = "the task's run record is gone"
            continue
        if not run.finished:
            continue
        state.status = run.status if run.status != "skipped" else "cancelled"  # type: ignore[assignment]
        state.attempt = run.attempt
        state.node = run.node
        state.started_at = run.started_at
        state.finished_at = run.finished_at
        state.exit_code = run.exit_code
        kept, why = stored_result(run.result, used)
        used += result_size(kept)
        state.result = kept
        state.error = run.error or why
        if run.finished_at is not None and (newest is None or run.finished_at > newest):
            newest = run.finished_at
    return newest


def step(
    ex: Execution,
    graph: Graph,
    *,
    now: datetime,
    new_run: Callable[[str], Run],
    base_size: int,
) -> tuple[list[Run], bool]:
    """Advance ``ex`` (in place) by one transaction: answers the task runs to create (``new_run``
    mints the run of a task by name) and whether more tasks are ready than fit (``base_size``:
    bytes of the execution record already in the transaction)."""
    adv = advance(graph, ex.dag_states(), cancelled=ex.cancel_requested)
    for name in adv.upstream_failed:
        ex.tasks[name].status = "upstream_failed"
        ex.tasks[name].finished_at = now
    for name in adv.cancel:
        ex.tasks[name].status = "cancelled"
        ex.tasks[name].error = "the execution was cancelled before it started"
        ex.tasks[name].finished_at = now
    if ex.cancel_requested:
        for t in ex.tasks.values():
            if t.status == "waiting":
                t.status = "cancelled"
                t.finished_at = now
        adv = advance(graph, ex.dag_states(), cancelled=True)
    runs: list[Run] = []
    more = False
    budget = MAX_TXN_OPS - 8
    size = base_size
    for name in adv.start:
        task = ex.snapshot.task(name)
        state = ex.tasks[name]
        if task.external:
            state.status = "waiting"
            state.report_key = f"{ex.id}.{name}"
            state.started_at = now
            continue
        run = new_run(name)
        doc = len(run.model_dump_json())
        ops = (len(runs) + 1) * CREATE_RUN_OPS  # with this one's
        if runs and (ops > budget or size + 2 * doc > TXN_BYTES):
            more = True  # the rest start in the next transaction, at once
            break
        size += 2 * doc
        runs.append(run)
        state.status = "started"
        state.run_id = run.id
        state.attempt = 1
    if not more:
        final = advance(graph, ex.dag_states(), cancelled=ex.cancel_requested)
        ex.status = final.status if ex.status != "queued" else ex.status
        if ex.cancel_requested and ex.status == "queued":
            ex.status = "cancelled"
        if ex.finished:
            ex.finished_at = now
    return runs, more
