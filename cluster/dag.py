"""Pure DAG decisions: graph validation, advancing an execution, rerun sets, admission.

No I/O, no clock. The leader's workflow engine reads state, asks these functions what to do and
writes the answer in one fenced transaction.

Task states as this module sees them:

- ``pending``: not started (its upstream is not done yet);
- ``active``: started and not finished (a run exists, or an external task waits for its report);
- ``succeeded``;
- a failure: ``failed``, ``timed_out``, ``lost``, ``cancelled``, ``upstream_failed``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from cluster.errors import InvalidInput

TriggerRule = Literal["all_success", "all_done"]
ExecutionStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
FAILED_STATES: frozenset[str] = frozenset(
    {"failed", "timed_out", "lost", "cancelled", "upstream_failed"}
)
DONE_STATES: frozenset[str] = FAILED_STATES | {"succeeded"}


class GraphError(InvalidInput):
    """A workflow's tasks do not form a valid DAG (cycle, unknown or duplicate name, self-edge)."""

    code = "invalid_graph"


@dataclass(frozen=True, slots=True)
class TaskNode:
    name: str
    depends_on: tuple[str, ...] = ()
    trigger_rule: TriggerRule = "all_success"


@dataclass(frozen=True, slots=True)
class Graph:
    """Tasks in a topological order (ties keep the declared order) with their upstream sets."""

    order: tuple[str, ...]
    upstream: Mapping[str, tuple[str, ...]]
    rules: Mapping[str, TriggerRule]

    def downstream_of(self, roots: Iterable[str]) -> set[str]:
        """``roots`` and everything that depends on them, transitively."""
        out = set(roots)
        for name in self.order:  # topological: upstream before downstream
            if name not in out and any(u in out for u in self.upstream[name]):
                out.add(name)
        return out


def ancestors(graph: Graph, task: str) -> list[str]:
    """Every task ``task`` depends on, transitively, in topological order."""
    seen: set[str] = set()
    todo = list(graph.upstream[task])
    while todo:
        n = todo.pop()
        if n not in seen:
            seen.add(n)
            todo.extend(graph.upstream[n])
    return [n for n in graph.order if n in seen]


def build_graph(
    tasks: Sequence[TaskNode], edges: Sequence[tuple[str, str]] = (), field_base: str = "tasks"
) -> Graph:
    """Validate and order a workflow's tasks; errors name the offending task, edge or cycle."""
    index: dict[str, int] = {}
    for i, task in enumerate(tasks):
        if task.name in index:
            raise GraphError(
                f"duplicate task name {task.name!r} (tasks {index[task.name]} and {i})",
                field=f"{field_base}.{i}.name",
            )
        index[task.name] = i
    upstream: dict[str, list[str]] = {t.name: [] for t in tasks}
    for i, task in enumerate(tasks):
        for dep in task.depends_on:
            where = f"{field_base}.{i}.depends_on"
            if dep == task.name:
                raise GraphError(f"task {task.name!r} depends on itself", field=where)
            if dep not in index:
                raise GraphError(f"task {task.name!r} depends on unknown task {dep!r}", field=where)
            if dep not in upstream[task.name]:
                upstream[task.name].append(dep)
    for j, (src, dst) in enumerate(edges):
        where = f"edges.{j}"
        for end in (src, dst):
            if end not in index:
                raise GraphError(f"edge {src!r} -> {dst!r} names unknown task {end!r}", field=where)
        if src == dst:
            raise GraphError(f"edge {src!r} -> {dst!r} is a self-edge", field=where)
        if src not in upstream[dst]:
            upstream[dst].append(src)
    order = _topological(list(index), upstream)
    if len(order) < len(index):
        cycle = _find_cycle([n for n in index if n not in set(order)], upstream)
        raise GraphError(
            "the dependencies form a cycle: " + " -> ".join(cycle), field=f"{field_base}"
        )
    return Graph(
        order=tuple(order),
        upstream={n: tuple(u) for n, u in upstream.items()},
        rules={t.name: t.trigger_rule for t in tasks},
    )


def _topological(names: list[str], upstream: Mapping[str, list[str]]) -> list[str]:
    remaining = {n: len(upstream[n]) for n in names}
    children: dict[str, list[str]] = {n: [] for n in names}
    for n in names:
        for u in upstream[n]:
            children[u].append(n)
    position = {n: i for i, n in enumerate(names)}
    ready = [n for n in names if remaining[n] == 0]
    order: list[str] = []
    while ready:
        ready.sort(key=position.__getitem__)
        n = ready.pop(0)
        order.append(n)
        for c in children[n]:
            remaining[c] -= 1
            if remaining[c] == 0:
                ready.append(c)
    return order


def _find_cycle(stuck: list[str], upstream: Mapping[str, list[str]]) -> list[str]:
    """One cycle among the tasks a topological sort could not place, as a closed path."""
    inside = set(stuck)
    path: list[str] = []
    seen: dict[str, int] = {}
    node = stuck[0]
    while node not in seen:
        seen[node] = len(path)
        path.append(node)
        node = next(u for u in upstream[node] if u in inside)
    # ``path`` follows upstream links; a cycle reads naturally in the direction of the edges.
    cycle = path[seen[node] :]
    cycle.reverse()
    first = min(range(len(cycle)), key=lambda i: stuck.index(cycle[i]))  # declared first
    cycle = cycle[first:] + cycle[:first]
    return [*cycle, cycle[0]]


@dataclass(frozen=True, slots=True)
class Advance:
    """What to do next with one execution."""

    start: list[str] = field(default_factory=list)
    upstream_failed: list[str] = field(default_factory=list)
    cancel: list[str] = field(default_factory=list)  # pending tasks that never start
    status: ExecutionStatus = "running"


def advance(graph: Graph, states: Mapping[str, str], *, cancelled: bool = False) -> Advance:
    """Given each task's state, the tasks to start now, the tasks whose upstream failed, and the
    execution's resulting status. Tasks already active or done are left alone."""
    now = dict(states)
    start: list[str] = []
    up_failed: list[str] = []
    cancel: list[str] = []
    for name in graph.order:
        if now.get(name, "pending") != "pending":
            continue
        if cancelled:
            now[name] = "cancelled"
            cancel.append(name)
            continue
        ups = [now.get(u, "pending") for u in graph.upstream[name]]
        if graph.rules.get(name, "all_success") == "all_done":
            if all(s in DONE_STATES for s in ups):
                start.append(name)
                now[name] = "active"
        elif any(s in FAILED_STATES for s in ups):
            up_failed.append(name)
            now[name] = "upstream_failed"
        elif all(s == "succeeded" for s in ups):
            start.append(name)
            now[name] = "active"
    return Advance(start, up_failed, cancel, _status(now.values(), cancelled))


def _status(states: Iterable[str], cancelled: bool) -> ExecutionStatus:
    values = list(states)
    if any(s not in DONE_STATES for s in values):
        return "running"
    if cancelled:
        return "cancelled"
    return "failed" if any(s in FAILED_STATES for s in values) else "succeeded"


def rerun_set(
    graph: Graph,
    states: Mapping[str, str],
    *,
    from_task: str | None = None,
    failed_only: bool = False,
) -> set[str]:
    """The tasks a rerun resets to pending: ``from_task`` and its downstream, or every failed
    task (not merely upstream_failed) and its downstream; upstream results are kept."""
    if from_task is not None:
        if from_task not in graph.upstream:
            raise InvalidInput(f"unknown task {from_task!r}", field="from_task")
        return graph.downstream_of([from_task])
    if failed_only:
        roots = [
            n
            for n in graph.order
            if states.get(n) in FAILED_STATES and states.get(n) != "upstream_failed"
        ]
        # An upstream_failed task whose failed upstream is not being rerun stays as it is.
        return graph.downstream_of(roots) if roots else set()
    return set(graph.order)


def admit(queued: Sequence[tuple[int, str]], running: int, limit: int) -> list[str]:
    """Which queued executions (``(priority, id)``) may start now under a limit of ``limit``
    running executions (0: no limit): higher priority first, then oldest (ids are time-ordered)."""
    ordered = sorted(queued, key=lambda q: (-q[0], q[1]))
    free = len(ordered) if limit <= 0 else max(0, limit - running)
    return [q[1] for q in ordered[:free]]
