"""Budget documents in etcd (D274): written by a cluster admin, referenced by jobs and workflow
tasks. As with secrets (D146), a document naming budgets is written with a compare that each of
them exists, and a deletion compares that no job or workflow was written since it found none
naming the budget: a budget in use can never be deleted, and a job can never be stored naming a
budget that does not exist."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from cluster.budgets import Budget, BudgetSpec, Window, window_start
from cluster.errors import Conflict, Forbidden, InvalidInput, NotFound
from cluster.etcd import Compare, Etcd, Op, prefix_end
from cluster.keys import Keys
from cluster.models import parse_model

SCAN_PAGE = 500
MAX_BUDGETS = 1000  # documents in a cluster (every worker caches them all)
USAGE_CHUNK = 60  # budgets whose use one transaction reads (two operations each, etcd takes 128)
MAX_NAMED = 100  # distinct budgets one document names (one compare each)


class BudgetNotFound(NotFound):
    pass


def named(doc: dict[str, Any]) -> list[tuple[str, str]]:
    """(field, budget) of every budget a job or workflow document names."""
    out = [(f"budgets.{i}", str(n)) for i, n in enumerate(doc.get("budgets") or [])]
    for t, task in enumerate(doc.get("tasks") or []):
        if isinstance(task, dict):
            out += [
                (f"tasks.{t}.budgets.{i}", str(n)) for i, n in enumerate(task.get("budgets") or [])
            ]
    return out


class BudgetNotOpen(Forbidden):
    code = "budget_not_open"


async def budget_guards(
    etcd: Etcd, keys: Keys, project: str, refs: Sequence[tuple[str, str]]
) -> list[Any]:
    """Compares that keep every named budget as read while a document of ``project`` is
    written (a budget deleted or closed to the project meanwhile fails the write, which
    retries); an unknown one is a 400 naming its field (``budgets.0``, ``tasks.1.budgets.0``),
    one not open to the project a 403 naming it, before any write."""
    names = sorted({n for _, n in refs})
    if not names:
        return []
    if len(names) > MAX_NAMED:
        raise InvalidInput(f"names {len(names)} budgets; at most {MAX_NAMED}", field="budgets")
    res = await etcd.txn([], [Op.get(keys.budget(n)) for n in names])
    found = {n: kvs[0] for i, n in enumerate(names) if (kvs := res.range_kvs(i))}
    for field, name in refs:
        kv = found.get(name)
        if kv is None:
            raise InvalidInput(
                f"{field}: no budget {name!r} (a cluster admin creates it: PUT /api/v1/budgets/"
                f"{name})",
                field=field,
            )
        if not Budget.model_validate_json(kv.value).admits(project):
            raise BudgetNotOpen(
                f"{field}: budget {name!r} is not open to project {project!r}", field=field
            )
    return [Compare.modified(keys.budget(n), kv.mod_revision) for n, kv in found.items()]


class BudgetStore:
    def __init__(self, etcd: Etcd, keys: Keys, clock: Callable[[], datetime]) -> None:
        self.etcd = etcd
        self.keys = keys
        self.clock = clock

    async def get(self, name: str) -> Budget:
        kv = await self.etcd.get(self.keys.budget(name))
        if kv is None:
            raise BudgetNotFound(f"budget {name!r} not found", field="name")
        return Budget.model_validate_json(kv.value)

    async def list_page(self, *, limit: int, after: str | None) -> tuple[list[Budget], str | None]:
        base = self.keys.budgets()
        start = base + (after + "\0" if after else "")
        res = await self.etcd.range(start, end=prefix_end(base).decode(), limit=limit)
        items = [Budget.model_validate_json(kv.value) for kv in res.kvs]
        return items, (items[-1].name if res.more and items else None)

    async def put(self, data: Any, actor: str | None) -> tuple[Budget, bool]:
        spec = parse_model(BudgetSpec, data)
        key = self.keys.budget(spec.name)
        for _ in range(5):
            kv = await self.etcd.get(key)
            now = self.clock()
            old = Budget.model_validate_json(kv.value) if kv is not None else None
            guards = [Compare.modified(key, kv.mod_revision if kv else 0)]
            if old is None:
                count = await self.etcd.range(self.keys.budgets(), count_only=True)
                # a creation that raced ours lands after the count: we retry (D500)
                guards.append(Compare.unchanged_since(self.keys.budgets(), count.revision))
                if count.count >= MAX_BUDGETS:
                    raise InvalidInput(f"at most {MAX_BUDGETS} budgets", field="name")
            budget = Budget(
                **spec.model_dump(),
                created_at=old.created_at if old else now,
                updated_at=now,
                updated_by=actor,
            )
            # a lowered ``concurrent``: slots above it stay held by their runs until those end,
            # and none is given out again (claims take indices below the limit only)
            ops: list[Any] = [Op.put(key, budget.model_dump_json())]
            res = await self.etcd.txn(guards, ops)
            if res.succeeded:
                return budget, kv is None
        raise Conflict(f"budget {spec.name!r} is being changed concurrently; retry", field="name")

    async def users(self, name: str) -> tuple[list[str], int]:
        """The jobs and workflows (of every project) naming budget ``name``, read at one
        revision (returned, for the deletion's guard). Paged: never one unbounded read."""
        found: list[str] = []
        revision = 0
        for kind, base in (("job", self.keys.jobs()), ("workflow", self.keys.workflows())):
            start, end = base, prefix_end(base).decode()
            while True:
                res = await self.etcd.range(start, end=end, limit=SCAN_PAGE, revision=revision)
                revision = revision or res.revision
                for kv in res.kvs:
                    if any(n == name for _, n in named(json.loads(kv.value))):
                        found.append(f"{kind} {kv.key[len(base) :]}")
                if not res.more or not res.kvs:
                    break
                start = res.kvs[-1].key + "\0"
        return found, revision

    async def delete(self, name: str) -> None:
        """Delete a budget no job or workflow names (409 naming them otherwise), with its held
        slots and its start window."""
        key = self.keys.budget(name)
        for _ in range(5):
            if await self.etcd.get(key) is None:
                raise BudgetNotFound(f"budget {name!r} not found", field="name")
            users, revision = await self.users(name)
            if users:
                shown = ", ".join(users[:20]) + (
                    f" and {len(users) - 20} more" if len(users) > 20 else ""
                )
                raise Conflict(
                    f"budget {name!r} is used by {shown}: remove the references first",
                    field="name",
                )
            res = await self.etcd.txn(
                [
                    Compare.exists(key),
                    Compare.unchanged_since(self.keys.jobs(), revision),
                    Compare.unchanged_since(self.keys.workflows(), revision),
                ],
                [
                    Op.delete(key),
                    Op.delete(self.keys.budget_slots(name), prefix=True),
                    Op.delete(self.keys.budget_starts(name)),
                ],
            )
            if res.succeeded:
                return
        raise Conflict(f"budget {name!r}: jobs are being changed concurrently; retry", field="name")

    async def usage(self, budget: BudgetSpec) -> dict[str, Any]:
        """What a budget holds now, read at one revision: slots in use and the start window."""
        return (await self.usages([budget]))[0]

    async def usages(self, budgets: Sequence[BudgetSpec]) -> list[dict[str, Any]]:
        """``usage`` of each of ``budgets``, ``USAGE_CHUNK`` to a transaction (a page of 1000
        was 1000 round trips, for any signed-in user: D505)."""
        out: list[dict[str, Any]] = []
        for i in range(0, len(budgets), USAGE_CHUNK):
            chunk = budgets[i : i + USAGE_CHUNK]
            ops = []
            for budget in chunk:
                ops += [
                    Op.count(self.keys.budget_slots(budget.name)),
                    Op.get(self.keys.budget_starts(budget.name)),
                ]
            res = await self.etcd.txn([], ops)
            out += [self._use(budget, res, 2 * j) for j, budget in enumerate(chunk)]
        return out

    def _use(self, budget: BudgetSpec, res: Any, at: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if budget.concurrent is not None:
            held = int(res.responses[at].response_range.count)
            out["running"] = held
            out["concurrent"] = budget.concurrent
        if budget.starts is not None:
            kvs = res.range_kvs(at + 1)
            window = Window.model_validate_json(kvs[0].value) if kvs else None
            seconds = budget.starts.seconds
            start = window_start(self.clock(), seconds)
            count = window.count if window is not None and window.start == start else 0
            out["starts"] = {
                "window_start": datetime.fromtimestamp(start, UTC).isoformat(),
                "window_end": datetime.fromtimestamp(start + seconds, UTC).isoformat(),
                "count": count,
                "limit": budget.starts.limit,
            }
        return out
