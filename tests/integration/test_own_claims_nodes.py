"""The leader claims its own runs when it creates them (D444), on real `cronmesh node` processes.

What is observed from outside: the queue prefix is watched from before the jobs exist, so a run
that never had a queue entry was claimed in its creation (nobody else could have claimed it); the
runs' records say where they ran and how many times each tick fired.
"""

from __future__ import annotations

import asyncio
import math
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from cluster.etcd import Etcd
from cluster.keys import Keys
from cluster.models import FINISHED
from cluster.placement import Candidate, attempt_key, preferred
from tests.chaos.harness import leader_of, read_metric, wait_ready
from tests.conftest import api_session, wait_for

JOBS = "/api/v1/projects/default/jobs"
RUNS = "/api/v1/projects/default/runs"
GROUPS = "/api/v1/groups"
SELF = {"via": "self"}


class QueueLog:
    """The run ids that ever had a queue entry, from ``revision`` on: a watch of the cluster's
    prefix (queue entries, and a marker key of the test's that says the watch caught up)."""

    def __init__(self, etcd: Etcd, keys: Keys, revision: int) -> None:
        self.ids: set[str] = set()
        self.marker = f"{keys.prefix}/test-marker/queue-log"
        self.marked = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._follow(etcd, keys, revision))

    async def _follow(self, etcd: Etcd, keys: Keys, revision: int) -> None:
        async for batch in etcd.watch(keys.prefix + "/", start_revision=revision + 1):
            for ev in batch.events:
                if ev.kind == "put" and ev.kv.key.startswith(keys.queue()):
                    self.ids.add(ev.kv.key.rsplit("/", 1)[-1])
                elif ev.kv.key == self.marker:
                    self.marked.set()

    async def seen(self, etcd: Etcd) -> set[str]:
        """Every id queued up to now: the watch has delivered a write made after them."""
        self.marked.clear()
        await etcd.put(self.marker, str(time.time()))
        await wait_for(self.marked.is_set, 30, what="the queue watch caught up")
        return set(self.ids)

    async def stop(self, etcd: Etcd) -> set[str]:
        try:
            return await self.seen(etcd)
        finally:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


async def api(http: aiohttp.ClientSession, method: str, url: str, **kw: Any) -> Any:
    async with http.request(method, url, timeout=aiohttp.ClientTimeout(total=15), **kw) as r:
        body = await r.json() if r.content_type == "application/json" else await r.text()
        assert r.status < 300, (r.status, body)
        return body


async def runs_of(http: aiohttp.ClientSession, url: str, names: list[str]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for name in names:
        body = await api(http, "GET", f"{url}{RUNS}?job={name}&limit=500")
        out += body["runs"]
    return out


async def tick_runs(
    http: aiohttp.ClientSession, url: str, names: list[str], per_job: int
) -> tuple[list[dict[str, Any]], set[str]]:
    """Once every job has ``per_job`` finished runs: the jobs are disabled, and every run of
    theirs is answered once all are finished, with the ids of the runs created before the
    first job was disabled. Only those are sure to be claimed where they would have been: the
    jobs are disabled one by one while the leader fires the others in shared transactions, and
    a batch planned with a job's old revision is refused and written again queued (D446)."""

    async def enough() -> bool:
        runs = await runs_of(http, url, names)
        done = Counter(r["job"] for r in runs if r["status"] in FINISHED)
        return all(done[n] >= per_job for n in names)

    await wait_for(enough, 90, interval=0.3, what=f"{per_job} finished runs of each job")
    before = {r["id"] for r in await runs_of(http, url, names)}  # all created before the PATCH
    for name in names:
        await api(http, "PATCH", f"{url}{JOBS}/{name}", json={"enabled": False})

    async def settled() -> list[dict[str, Any]] | None:
        runs = await runs_of(http, url, names)
        return runs if all(r["status"] in FINISHED for r in runs) else None

    runs = await wait_for(settled, 60, interval=0.3, what="every run finished")
    return runs, before


async def claiming_in_creations(http: aiohttp.ClientSession, api_url: str, node: Any) -> None:
    """Until ``node`` (the leader) has claimed a run in its creation: a probe job every second,
    disabled then. A node answers ready before its worker's view of the cluster has loaded, and
    the runs it creates until then are queued (D444): on a loaded machine that can be seconds."""
    probe = {"name": "probe", "command": "true", "schedules": [{"cron": "* * * * * *"}]}
    await api(http, "POST", f"{api_url}{JOBS}", json=probe)

    async def claimed() -> bool:
        got = await read_metric(http, node.url, "cronmesh_placement_claims_total", SELF, default=0)
        return got > 0

    await wait_for(claimed, 60, interval=0.2, what=f"{node.node_id} claiming in its creations")
    await api(http, "PATCH", f"{api_url}{JOBS}/probe", json={"enabled": False})


def once_per_tick(runs: list[dict[str, Any]]) -> None:
    ticks = Counter((r["job"], r["scheduled_at"]) for r in runs)
    twice = [t for t, n in ticks.items() if n > 1]
    assert not twice, twice


async def test_a_single_node_claims_its_scheduled_runs_in_their_creation(procs, etcd, keys):
    """One default node, 5 jobs every second: every run is claimed in the transaction that
    creates it (no queue entry is ever written), each tick runs once, all succeed."""
    node = procs.start("solo")
    names = [f"solo{i}" for i in range(5)]
    async with api_session() as http:
        await wait_ready(http, node)
        await claiming_in_creations(http, node.url, node)
        start = (await etcd.range(keys.queue(), count_only=True)).revision
        queue = QueueLog(etcd, keys, start)
        for name in names:
            job = {"name": name, "command": "true", "schedules": [{"cron": "* * * * * *"}]}
            await api(http, "POST", f"{node.url}{JOBS}", json=job)
        runs, before = await tick_runs(http, node.url, names, 4)
        queued = await queue.stop(etcd)
        own = await read_metric(http, node.url, "cronmesh_placement_claims_total", SELF)
    once_per_tick(runs)
    assert [r for r in runs if r["status"] != "succeeded"] == []
    assert {r["node"] for r in runs} == {"solo"}
    assert len(before) >= 4 * len(names) and queued & before == set()
    assert own >= len(before), (own, len(before))


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_in_three_nodes_the_leader_takes_only_the_runs_it_is_preferred_for(procs, etcd, keys):
    """Three nodes bound to a group with weights 1, 2, 3 and a hand-off delay longer than the
    test: the leader's runs were never queued, every other node's were, each tick ran once, and
    the spread still follows the weights (chi-square)."""
    weights = {"sp1": 1, "sp2": 2, "sp3": 3}
    nodes = [procs.start(name, "--handoff-delay", "60") for name in weights]
    names = [f"spread{i}" for i in range(12)]
    async with api_session() as http:
        for n in nodes:
            await wait_ready(http, n)
        base = nodes[0].url
        await api(http, "PUT", f"{base}{GROUPS}/spread", json={"projects": ["default"]})
        for name, w in weights.items():
            bind = {"node": name, "weight": w}
            await api(http, "PUT", f"{base}{GROUPS}/spread/bindings/{name}", json=bind)

        async def views_ready() -> bool:
            for n in nodes:
                body = await api(http, "GET", f"{n.url}/api/v1/placement?group=spread")
                if len(body["candidates"]) != 3:
                    return False
            return True

        await wait_for(views_ready, 30, what="every node sees the bindings")
        leader = await wait_for(lambda: leader_of(http, nodes), 30, what="a leader")
        await claiming_in_creations(http, base, next(n for n in nodes if n.node_id == leader))
        start = (await etcd.range(keys.queue(), count_only=True)).revision
        queue = QueueLog(etcd, keys, start)
        for name in names:
            job = {
                "name": name,
                "command": "true",
                "schedules": [{"cron": "* * * * * *"}],
                "target": {"group": "spread"},
            }
            await api(http, "POST", f"{base}{JOBS}", json=job)
        runs, before = await tick_runs(http, base, names, 10)
        queued = await queue.stop(etcd)
        own, led = {}, {}
        for n in nodes:
            own[n.node_id] = await read_metric(
                http, n.url, "cronmesh_placement_claims_total", SELF, default=0
            )
            led[n.node_id] = await read_metric(
                http, n.url, "cronmesh_leadership_acquired_total", default=0
            )
    once_per_tick(runs)
    assert [r for r in runs if r["status"] != "succeeded"] == []
    # a leadership change on a starved machine (a lease lost) is allowed: every node that led
    # claims in its creations; a node that never led claims only through the queue
    leaders = {n for n, times in led.items() if times}
    assert leader in leaders
    on_leaders = [r for r in runs if r["node"] in leaders]
    elsewhere = [r for r in runs if r["node"] not in leaders]
    assert elsewhere, runs
    assert [r["id"] for r in elsewhere if r["id"] not in queued] == []  # through the queue
    assert all(own[n] == 0 for n in own if n not in leaders), own
    never_queued = [r for r in on_leaders if r["id"] not in queued]  # claimed in their creation
    assert never_queued and sum(own[n] for n in leaders) >= len(never_queued), own
    if leaders == {leader}:  # one leader throughout: it queued none of its own runs (made
        early = [r["id"] for r in on_leaders if r["id"] in before]  # before the jobs' PATCH)
        assert early and not set(early) & queued, early
    # each run ran on its preferred node (the hand-off delay outlasts the test): the leader's
    # claims in its creations are no exception
    bound = [Candidate(name, w, name, "spread") for name, w in weights.items()]
    drawn = {r["id"]: preferred(attempt_key(r["id"], r["attempt"]), bound) for r in runs}
    assert [r["id"] for r in runs if drawn[r["id"]].node != r["node"]] == []  # type: ignore[union-attr]
    counts = Counter(r["node"] for r in runs)
    n = len(runs)
    chi2 = sum((counts[k] - n * w / 6) ** 2 / (n * w / 6) for k, w in weights.items())
    print(f"spread {dict(counts)} of {n} runs, leaders {sorted(leaders)}, chi2={chi2:.2f}")
    # chi-square with 2 degrees of freedom: P(X > 27.6) = 1e-6 for a fair weighted choice.
    assert chi2 < 27.6, counts


async def test_capacity_one_runs_one_at_a_time_and_queues_what_it_cannot_take(
    procs, etcd, keys, tmp_path: Path
):
    """A node of capacity 1 planning at the tick (``--materialize-ahead 0``: runs due now, not
    armed ahead) with 4 jobs due at one instant: it claims one in the creation, the others go
    through the queue, never two run at once, and all run."""
    running, log = tmp_path / "running", tmp_path / "starts"
    running.mkdir()
    command = (
        f'me={running}/$CRONMESH_RUN_ID; touch "$me"; '
        f'echo "$(ls {running} | wc -l)" >> {log}; sleep 0.5; rm "$me"'
    )
    node = procs.start("cap1", "--capacity", "1", "--materialize-ahead", "0")
    names = [f"burst{i}" for i in range(4)]
    async with api_session() as http:
        await wait_ready(http, node)
        await wait_for(lambda: 0.2 < time.time() % 10 < 5, 15, interval=0.05, what="a period")
        start = (await etcd.range(keys.queue(), count_only=True)).revision
        queue = QueueLog(etcd, keys, start)
        for name in names:
            job = {"name": name, "command": command, "schedules": [{"cron": "*/10 * * * * *"}]}
            await api(http, "POST", f"{node.url}{JOBS}", json=job)
        runs, _ = await tick_runs(http, node.url, names, 1)
        queued = await queue.stop(etcd)
        own = await read_metric(http, node.url, "cronmesh_placement_claims_total", SELF, default=0)
    first = min(r["scheduled_at"] for r in runs)
    burst = [r for r in runs if r["scheduled_at"] == first]
    assert len(burst) == 4 and all(r["status"] == "succeeded" for r in burst), burst
    seen = [int(x) for x in log.read_text().split()]
    assert max(seen) == 1, seen  # capacity bounds what runs
    assert 1 <= own and len({r["id"] for r in burst} & queued) >= 3, (own, queued)


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_a_leader_killed_holding_its_own_claims_ahead_loses_them_never_runs_twice(
    procs, etcd, keys, tmp_path: Path
):
    """The leader is SIGKILLed after it created (and claimed) runs ahead of their instant and
    before the instant: those runs are recorded ``lost`` by the next leader and retried per
    their policy on the survivor; no run's attempt starts twice."""
    book = tmp_path / "book"
    command = f'echo "$CRONMESH_RUN_ID $CRONMESH_ATTEMPT $CRONMESH_NODE" >> {book}'
    a = procs.start("kill-a", "--handoff-delay", "60")
    async with api_session() as http:
        await wait_ready(http, a)
        b = procs.start("kill-b", "--handoff-delay", "60")
        await wait_ready(http, b)
        leader = await wait_for(lambda: leader_of(http, [a, b]), 30, what="a leader")
        victim, survivor = (a, b) if leader == a.node_id else (b, a)
        # every run of the group prefers the leader: it claims them all in their creation
        await api(http, "PUT", f"{victim.url}{GROUPS}/lead", json={"projects": ["default"]})
        for n in (victim, survivor):
            bind = {"node": n.node_id, "weight": 1000 if n is victim else 1}
            await api(http, "PUT", f"{victim.url}{GROUPS}/lead/bindings/{n.node_id}", json=bind)
        await wait_for(lambda: 0.3 < time.time() % 10 < 4, 15, interval=0.05, what="a period")
        tick = (math.floor(time.time() / 10) + 1) * 10
        start = (await etcd.range(keys.queue(), count_only=True)).revision
        queue = QueueLog(etcd, keys, start)
        names = [f"held{i}" for i in range(4)]
        for name in names:
            job = {
                "name": name,
                "command": command,
                "schedules": [{"cron": "*/10 * * * * *"}],
                "target": {"group": "lead"},
                "retries": 1,
                "retry_interval": 0,
            }
            await api(http, "POST", f"{victim.url}{JOBS}", json=job)

        async def held_ahead() -> list[str] | None:
            res = await etcd.range(keys.claims())
            me = f'"node":"{victim.node_id}"'.encode()
            mine = [kv.key.rsplit("/", 1)[-1] for kv in res.kvs if me in kv.value]
            return mine if len(mine) >= 2 and time.time() < tick - 0.1 else None

        held = await wait_for(held_ahead, 15, interval=0.02, what="runs claimed ahead")
        assert time.time() < tick, "the runs were not held ahead of their instant"
        victim.signal(signal.SIGKILL)
        before = await queue.seen(etcd)
        assert set(held) & before == set()  # claimed in their creation, never queued

        async def retried() -> list[dict[str, Any]] | None:
            runs = [await api(http, "GET", f"{survivor.url}{RUNS}/{rid}") for rid in held]
            return runs if all(r["status"] in FINISHED for r in runs) else None

        runs = await wait_for(retried, 60, interval=0.3, what="the held runs retried")
        queued = await queue.stop(etcd)
        for name in names:
            await api(http, "PATCH", f"{survivor.url}{JOBS}/{name}", json={"enabled": False})
    for r in runs:
        assert r["id"] in queued  # its retry was queued (its first attempt was not: below)
        assert [(x["status"], x["node"]) for x in r["attempts"]] == [
            ("lost", victim.node_id),
            ("succeeded", survivor.node_id),
        ], r
    starts = Counter(tuple(line.split()[:2]) for line in book.read_text().splitlines())
    assert all(n == 1 for n in starts.values()), starts
    for rid in held:
        assert starts[(rid, "1")] == 0 and starts[(rid, "2")] == 1, starts
