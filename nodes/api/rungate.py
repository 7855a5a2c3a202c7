"""The gate every manual run passes before anything is written (D173, D512, D513): the
project's rate (per node) and its cap on unfinished runs (counted in etcd).

The count alone let a burst of concurrent admissions all pass it (one ``run_burst`` per node over
the cap). So an admission also holds its runs against the cap until they are written: the node's
holds on a project are one entry of ``run-admissions/<project>`` (``cluster.limits``), rewritten
with a compare on the value the count was read with, so an admission on another node between
the two makes this one count again. A node's admissions of one project take turns (they would
only conflict in etcd), and count the node's own holds from memory. A release only lowers the
node's holds in memory; the node's last admission of the project to end writes them (until then
each admission's write carries them): another node may count a hold for as long as this node
admits runs of the project without a pause, which can refuse a run at the cap that a retry
passes, never pass one over it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import structlog

from cluster.errors import Conflict, CronmeshError
from cluster.etcd import KV, Compare, Op
from cluster.limits import (
    Buckets,
    Counted,
    Held,
    RunLimits,
    check_pending,
    effective,
    others_held,
    with_mine,
)

if TYPE_CHECKING:
    from nodes.api.context import ApiContext

log = structlog.get_logger(__name__)
ADMIT_TRIES = 20  # an admission on another node of the same project since our count: again


@dataclass(eq=False)
class _Ask:
    """One admission waiting for its turn; decided by whichever admission writes next."""

    runs: int
    what: str
    also: Counted | None
    decided: bool = False
    error: BaseException | None = None
    charged: bool = False  # the rate's tokens were taken
    gone: bool = False  # cancelled while another admission's write was deciding it


@dataclass
class _Project:
    """This node's holds on one project, the admissions waiting, and the turn they take."""

    held: Held = field(default_factory=Held)
    asks: list[_Ask] = field(default_factory=list)
    turn: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0
    written: bool = True  # ``held`` is what etcd has for this node


class RunGate:
    def __init__(
        self,
        node: ApiContext,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.node = node
        self.clock = clock
        self.wall = wall
        self.buckets = Buckets()
        self._projects: dict[str, _Project] = {}

    async def limits(
        self, project: str
    ) -> tuple[RunLimits, RunLimits | None, RunLimits | None, int]:
        """(effective, cluster defaults, project overrides, unfinished runs): one round trip."""
        limits, cluster, own, unfinished, _, _ = await self._read(project, [])
        return limits, cluster, own, unfinished

    async def _read(
        self, project: str, prefixes: list[str]
    ) -> tuple[RunLimits, RunLimits | None, RunLimits | None, int, KV | None, dict[str, int]]:
        keys = self.node.keys
        res = await self.node.etcd.txn(
            [],
            [
                Op.get(keys.run_limits()),
                Op.get(keys.project_run_limits(project)),
                Op.count(keys.actives(project)),
                Op.get(keys.run_admissions(project)),
                *[Op.count(p) for p in prefixes],
            ],
        )
        cluster_kvs, project_kvs = res.range_kvs(0), res.range_kvs(1)
        cluster = RunLimits.model_validate_json(cluster_kvs[0].value) if cluster_kvs else None
        own = RunLimits.model_validate_json(project_kvs[0].value) if project_kvs else None
        unfinished = int(res.responses[2].response_range.count)
        holds = res.range_kvs(3)
        counts = {p: int(res.responses[4 + i].response_range.count) for i, p in enumerate(prefixes)}
        hold = holds[0] if holds else None
        return effective(cluster, own), cluster, own, unfinished, hold, counts

    @contextlib.asynccontextmanager
    async def admitted(
        self, project: str, runs: int, what: str = "runs", also: Counted | None = None
    ) -> AsyncIterator[None]:
        """Raise 429 (rate) or 403 ``quota_exceeded`` (cap) before ``runs`` new runs are made;
        else hold them against the cap while the body writes them (and a place in ``also``,
        which the body creates one key under: D513)."""
        if not runs and also is None:  # nothing to hold (a replaced document: D515)
            yield
            return
        state = self._projects.setdefault(project, _Project())
        state.users += 1
        ask = _Ask(runs, what, also)
        state.asks.append(ask)
        place = also.prefix if also else None
        try:
            try:
                async with state.turn:
                    if not ask.decided:  # else an earlier admission's write decided it
                        await self._decide(project, state)
            except BaseException:
                if ask in state.asks:  # cancelled while waiting: never decided
                    state.asks.remove(ask)
                elif ask.decided and ask.error is None:  # admitted, but will write nothing
                    state.held.add(runs, place, -1)
                    state.written = False
                elif not ask.decided:  # in another admission's write: it lets the hold go
                    ask.gone = True
                raise
            if ask.error is not None:
                raise ask.error
            try:
                yield
            finally:
                state.held.add(runs, place, -1)
                state.written = False
        finally:
            # the last one out writes what is left (nothing, mostly): the others' releases ride
            # on it or on the next admission's write
            try:
                if state.users == 1 and not state.written and not state.turn.locked():
                    async with state.turn:
                        await self._write_held(project, state)
            finally:  # even when that write is cancelled: else the count never comes down
                state.users -= 1
                if not state.users:
                    del self._projects[project]

    async def _decide(self, project: str, state: _Project) -> None:
        """Decide every admission waiting (one read, one compared write for them all)."""
        asks, state.asks = state.asks, []
        try:
            for _ in range(ADMIT_TRIES):
                passed = await self._try(project, state, asks)
                if passed is None:
                    return
                asks = passed  # an admission on another node since our read: count again
            for ask in asks:
                self._refund(project, ask)
                ask.decided, ask.error = (
                    True,
                    Conflict(
                        f"manual runs of project {project!r} are being admitted concurrently; "
                        "retry",
                        field="max_pending_runs",
                    ),
                )
        except BaseException as exc:
            undecided = [a for a in asks if not a.decided]
            if isinstance(exc, Exception):
                for ask in undecided:
                    self._refund(project, ask)
                    ask.decided, ask.error = True, exc
            else:  # cancelled: their own turns decide them (those still waiting)
                state.asks[:0] = [a for a in undecided if not a.gone]
            # a write whose outcome is unknown may have put the holds: write what is held
            state.written = False
            await self._write_held(project, state)
            raise

    def _refund(self, project: str, ask: _Ask) -> None:
        """An admission refused after its rate was charged makes no runs: its tokens go back."""
        if ask.charged:
            self.buckets.give_back(project, ask.runs)
            ask.charged = False

    async def _try(self, project: str, state: _Project, asks: list[_Ask]) -> list[_Ask] | None:
        """Refuse what the count refuses and write the holds of the others: None when written
        (or nothing was left to write), else the admissions to count again."""
        prefixes = sorted({a.also.prefix for a in asks if a.also})
        limits, _, _, unfinished, kv, counts = await self._read(project, prefixes)
        value = kv.value if kv else None
        now = self.wall()
        held = others_held(value, self.node.node_id, now).plus(state.held)
        assert limits.max_pending_runs is not None
        passed: list[_Ask] = []
        adding = Held()
        for ask in asks:
            place = ask.also.prefix if ask.also else None
            try:
                if ask.runs:  # (a document's creation holds no runs, D515)
                    held_runs = held.runs + adding.runs
                    check_pending(project, unfinished, ask.runs, limits.max_pending_runs, held_runs)
                if ask.also is not None and place is not None:
                    n = counts[place] + held.places.get(place, 0) + adding.places.get(place, 0)
                    if n >= ask.also.cap:
                        raise ask.also.refusal(n)
                if ask.runs and not ask.charged:
                    self.buckets.admit(project, ask.runs, limits, self.clock(), ask.what)
                    ask.charged = True
            except CronmeshError as exc:
                ask.decided, ask.error = True, exc
                continue
            passed.append(ask)
            adding.add(ask.runs, place)
        if not passed:
            return None
        mine = state.held.plus(adding)
        key = self.node.keys.run_admissions(project)
        new = with_mine(value, self.node.node_id, mine, now)
        # compared: an admission on another node since our read makes us count again
        guard = [Compare.modified(key, kv.mod_revision if kv else 0)]
        res = await self.node.etcd.txn(guard, [Op.put(key, new or "{}")])
        if not res.succeeded:
            return passed
        # releases while we wrote are not in etcd yet (``written``)
        state.held = state.held.plus(adding)
        state.written = state.held == mine
        for ask in passed:
            ask.decided = True
            if ask.gone:  # its request was cancelled while we wrote: nobody else releases it
                state.held.add(ask.runs, ask.also.prefix if ask.also else None, -1)
                state.written = False
        return None

    async def _write_held(self, project: str, state: _Project) -> None:
        """Write this node's holds (lowered by releases) to etcd: best effort, the entry
        lapses after ``HOLD_SECONDS`` anyway."""
        key = self.node.keys.run_admissions(project)
        etcd = self.node.etcd
        try:
            for _ in range(ADMIT_TRIES):
                if state.written:
                    return
                kv = await etcd.get(key)
                mine = state.held.plus(Held())
                new = with_mine(kv.value if kv else None, self.node.node_id, mine, self.wall())
                op = Op.put(key, new) if new else Op.delete(key)
                guard = [Compare.modified(key, kv.mod_revision if kv else 0)]
                if (await etcd.txn(guard, [op])).succeeded:
                    state.written = state.held == mine  # else lowered meanwhile: again
        except CronmeshError as exc:
            log.info("run holds not written", project=project, error=str(exc))
