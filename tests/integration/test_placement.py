"""Placement against a real etcd: groups and bindings, weights over hundreds of runs, capacity and
weight budgets, priority, drain/disable/enable, remote shutdown, unplaceable runs, machine ids."""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from typing import Any

import aiohttp
import pytest

from cluster.etcd import Op
from cluster.placement import attempt_key, preferred
from nodes import metrics
from nodes.config import default_capacity
from nodes.daemon.load import SAMPLE_EVERY
from tests.chaos.harness import wait_ready
from tests.conftest import api_session, run_cli, wait_for

JOBS = "/api/v1/projects/default/jobs"
RUNS = "/api/v1/projects/default/runs"
GROUPS = "/api/v1/groups"


async def call(http: aiohttp.ClientSession, method: str, url: str, **kw: Any) -> tuple[int, Any]:
    async with http.request(method, url, timeout=aiohttp.ClientTimeout(total=15), **kw) as r:
        if r.content_type == "application/json":
            return r.status, await r.json()
        return r.status, await r.text()


async def run_of(http: aiohttp.ClientSession, base: str, run_id: str) -> dict[str, Any]:
    status, body = await call(http, "GET", f"{base}{RUNS}/{run_id}")
    assert status == 200, body
    return body  # type: ignore[no-any-return]


async def finished(http: aiohttp.ClientSession, base: str, ids: list[str]) -> list[dict[str, Any]]:
    """Wait until every run is finished; answers their records."""

    async def all_done() -> list[dict[str, Any]] | None:
        status, body = await call(http, "GET", f"{base}{RUNS}?limit=1000")
        assert status == 200, body
        by_id = {r["id"]: r for r in body["runs"]}
        runs = [by_id.get(i) for i in ids]
        if all(r is not None and r["finished_at"] for r in runs):
            return runs  # type: ignore[return-value]
        return None

    return await wait_for(all_done, 120, interval=0.3, what="runs finished")  # type: ignore[no-any-return]


async def trigger(http: aiohttp.ClientSession, base: str, job: str) -> str:
    status, body = await call(http, "POST", f"{base}{JOBS}/{job}/runs", json={})
    assert status == 201, body
    return str(body["id"])


def max_overlap(runs: list[dict[str, Any]]) -> int:
    """Most runs held at once, from their claim (started_at) to completion (finished_at)."""
    events = sorted(
        [(r["started_at"], 1) for r in runs] + [(r["finished_at"], -1) for r in runs],
        key=lambda e: (e[0], e[1]),  # a finish at the same instant comes first
    )
    cur = best = 0
    for _, delta in events:
        cur += delta
        best = max(best, cur)
    return best


def handoffs() -> float:
    """Runs taken by a non-preferred node, over the in-process nodes of this test process."""
    value = metrics.REGISTRY.get_sample_value("cronmesh_placement_claims_total", {"via": "handoff"})
    return value or 0.0


# -- API, in-process nodes ----------------------------------------------------------------------


async def test_groups_and_bindings_api_with_errors_naming_the_field(cluster):
    await cluster.start("n1")
    req = cluster.request
    assert await req("GET", GROUPS) == (200, {"groups": [], "next": None})
    status, body = await req("PUT", f"{GROUPS}/etl", json={"description": "batch"})
    assert status == 201 and body["name"] == "etl"
    status, body = await req("PUT", f"{GROUPS}/etl/bindings/main", json={"node": "n1", "weight": 3})
    assert status == 201 and body == {**body, "node": "n1", "weight": 3, "group": "etl"}
    status, body = await req("GET", f"{GROUPS}/etl")
    assert status == 200 and [b["name"] for b in body["bindings"]] == ["main"]
    # Bad input: a 4xx naming the field, nothing written.
    cases = [
        ("PUT", f"{GROUPS}/etl/bindings/b2", {"node": "n1", "weight": 0}, 400, "weight"),
        ("PUT", f"{GROUPS}/etl/bindings/b2", {"node": "bad id!"}, 400, "node"),
        ("PUT", f"{GROUPS}/etl/bindings/b2", {"weight": 1}, 400, "node"),
        ("PUT", f"{GROUPS}/etl/bindings/b2", {"node": "n1", "color": 1}, 400, "color"),
        ("PUT", f"{GROUPS}/nope/bindings/b2", {"node": "n1"}, 404, "group"),
        ("PUT", f"{GROUPS}/Bad_Name", {}, 400, "group"),
        ("PUT", f"{GROUPS}/etl", {"name": "other"}, 400, "name"),
        ("DELETE", f"{GROUPS}/etl/bindings/nope", None, 404, "binding"),
        ("DELETE", f"{GROUPS}/nope", None, 404, "group"),
        ("POST", "/api/v1/nodes/n1/explode", None, 400, "action"),
        ("POST", "/api/v1/nodes/ghost/drain", None, 404, "node"),
        ("GET", "/api/v1/nodes/ghost", None, 404, "node"),
        ("POST", "/api/v1/nodes/n1/drain?reason=" + "x" * 2000, None, 400, "reason"),
        ("GET", "/api/v1/placement?selector=a%20((", None, 400, "selector"),
        ("GET", "/api/v1/placement?group=Bad!", None, 400, "group"),
        ("GET", "/api/v1/placement?run=1&attempt=x", None, 400, "attempt"),
        ("PUT", f"{GROUPS}/etl", {"tags": ["x" * 65]}, 400, "tags.0"),
        ("PUT", f"{JOBS}/j", {"command": "true", "target": {"group": "Bad!"}}, 400, "target.group"),
    ]
    for method, path, data, code, field in cases:
        kw = {"json": data} if data is not None else {}
        status, body = await req(method, path, **kw)
        assert (status, body["error"]["field"]) == (code, field), (method, path, body)
    status, body = await req("GET", f"{GROUPS}/etl")
    assert [b["name"] for b in body["bindings"]] == ["main"]
    # grants (D155): granted to nobody at first; a PUT without ``projects`` keeps them
    assert body["projects"] == []
    assert (await req("PUT", f"{GROUPS}/etl/projects/a"))[1]["projects"] == ["a"]
    assert (await req("PUT", f"{GROUPS}/etl/projects/%2A"))[1]["projects"] == ["*", "a"]
    status, body = await req("PUT", f"{GROUPS}/etl", json={"description": "again"})
    assert (status, body["projects"]) == (200, ["*", "a"])
    status, body = await req("PUT", f"{GROUPS}/etl", json={"projects": ["b"]})
    assert (status, body["projects"]) == (200, ["b"])
    for method, path, code, field in [
        ("PUT", f"{GROUPS}/etl/projects/Bad!", 400, "project"),
        ("PUT", f"{GROUPS}/nope/projects/a", 404, "group"),
        ("DELETE", f"{GROUPS}/etl/projects/a", 404, "project"),
    ]:
        status, body = await req(method, path)
        assert (status, body["error"]["field"]) == (code, field), (method, path, body)
    status, body = await req("PUT", f"{GROUPS}/etl", json={"projects": ["Bad!"]})
    assert (status, body["error"]["field"]) == (400, "projects.0")
    status, body = await req("GET", "/api/v1/placement?group=etl&project=a")
    assert body["reason"] == "no eligible node: group 'etl' is not granted to project 'a'"
    status, body = await req("GET", "/api/v1/placement?group=etl&project=b")
    assert body["candidates"] == [{"node": "n1", "weight": 3, "binding": "main"}]
    assert (await req("GET", "/api/v1/placement?project=Bad!"))[0] == 400
    assert (await req("DELETE", f"{GROUPS}/etl"))[0] == 204
    assert await req("GET", GROUPS) == (200, {"groups": [], "next": None})


async def test_claim_guard_unchanged_since_a_revision(etcd, keys):
    """The compare a claim carries so a node newly bound to a group is not claimed as shared."""
    from cluster.etcd import Compare

    prefix = keys.bindings()
    res = await etcd.range(prefix)
    assert (await etcd.txn([Compare.unchanged_since(prefix, res.revision)], [])).succeeded
    rev = (await etcd.txn([], [Op.put(keys.binding("g", "b"), "{}")])).revision
    assert not (await etcd.txn([Compare.unchanged_since(prefix, rev - 1)], [])).succeeded
    assert (await etcd.txn([Compare.unchanged_since(prefix, rev)], [])).succeeded
    await etcd.txn([], [Op.delete(keys.binding("g", "b"))])  # a deletion widens: still holds
    assert (await etcd.txn([Compare.unchanged_since(prefix, rev)], [])).succeeded


async def test_claim_guards_fail_once_a_grant_is_revoked_or_a_shared_node_is_bound(cluster):
    """The compares a worker adds to its claim (D155), from its own view: they hold while the
    view is current and fail after a revocation or a new binding the view has not applied."""
    from cluster.models import JobSpec, Run
    from cluster.placement import Candidate

    node = await cluster.start("n1")
    req = cluster.request
    await req("PUT", f"{GROUPS}/ga", json={"projects": ["a"]})
    await req("PUT", f"{GROUPS}/ga/bindings/x", json={"node": "n1"})
    worker, view = node.worker, node.view
    assert worker is not None and view is not None
    await wait_for(lambda: view.group_revision("ga") > 0 and "ga" in view.grants, what="view")

    def run(group: str | None) -> Run:
        spec = JobSpec(name="j", command="true", target={"group": group})
        return Run(
            id="1",
            project="a",
            job="j",
            status="pending",
            source="manual",
            created_at=node.clock(),
            snapshot=spec,
        )

    via_group = worker._grant_guards(run("ga"), Candidate("n1", 1, "x", grant="ga"))
    shared = worker._grant_guards(run(None), Candidate("n2", 1))
    assert (await node.etcd.txn(via_group, [])).succeeded
    assert (await node.etcd.txn(shared, [])).succeeded
    await req("DELETE", f"{GROUPS}/ga/projects/a")
    assert not (await node.etcd.txn(via_group, [])).succeeded  # revoked: the claim fails
    await req("PUT", f"{GROUPS}/gb", json={"projects": ["b"]})
    await req("PUT", f"{GROUPS}/gb/bindings/y", json={"node": "n2"})
    assert not (await node.etcd.txn(shared, [])).succeeded  # n2 is reserved now
    # the view catches up; fresh guards hold again
    await wait_for(lambda: "n2" in view.topology().reach("a")[0], what="view caught up")
    assert (await node.etcd.txn(worker._grant_guards(run(None), Candidate("n1", 1)), [])).succeeded


async def test_unplaceable_run_waits_with_a_reason_and_runs_when_a_node_appears(cluster):
    await cluster.start("n1", properties={"zone": "eu1"})
    job = {"command": "true", "target": {"selector": "gpu=true"}}
    assert (await cluster.request("PUT", f"{JOBS}/train", json=job))[0] == 201
    status, run = await cluster.request("POST", f"{JOBS}/train/runs", json={})
    assert status == 201
    status, run = await cluster.request("GET", f"{RUNS}/{run['id']}")
    assert run["status"] == "pending"
    assert run["placement"]["reason"] == "no eligible node: no live node matches 'gpu=true'"
    status, listed = await cluster.request("GET", f"{RUNS}?status=pending")
    assert listed["runs"][0]["placement"]["reason"].startswith("no eligible node")
    # A group target that does not exist says so too.
    status, body = await cluster.request("GET", "/api/v1/placement?group=ghost")
    assert body["reason"] == "no eligible node: group 'ghost' does not exist"
    await cluster.start("n2", properties={"gpu": "true"})

    async def done() -> Any:
        _, r = await cluster.request("GET", f"{RUNS}/{run['id']}")
        return r if r["status"] == "succeeded" else None

    got = await wait_for(done, 20, what="run placed on the new node")
    assert got["node"] == "n2" and "placement" not in got


async def test_changing_a_binding_moves_the_groups_jobs_from_the_next_run_on(cluster):
    n1 = await cluster.start("n1")
    await cluster.start("n2")
    req = cluster.request
    await req("PUT", f"{GROUPS}/web", json={"projects": ["default"]})
    await req("PUT", f"{GROUPS}/web/bindings/primary", json={"node": "n1"})
    for name in ("a", "b", "c"):
        await req("PUT", f"{JOBS}/{name}", json={"command": "true", "target": {"group": "web"}})

    async def ran_on(job: str) -> str:
        _, run = await req("POST", f"{JOBS}/{job}/runs", json={})

        async def done() -> Any:
            _, r = await req("GET", f"{RUNS}/{run['id']}")
            return r["node"] if r["status"] == "succeeded" else None

        return str(await wait_for(done, 20, what=f"{job} ran"))

    assert [await ran_on(j) for j in ("a", "b", "c")] == ["n1"] * 3
    status, _ = await req("PUT", f"{GROUPS}/web/bindings/primary", json={"node": "n2"})
    assert status == 200
    # Every worker learns of the change through its watch; wait until n1's view has it.
    await wait_for(
        lambda: n1.view and n1.view.placement("web", "").candidates[0].node == "n2",
        what="binding change seen",
    )
    assert [await ran_on(j) for j in ("a", "b", "c")] == ["n2"] * 3


async def test_a_full_preferred_node_hands_runs_off_after_the_delay(cluster, tmp_path):
    busy = await cluster.start("busy", capacity=1, handoff_delay=0.3)
    await cluster.start("spare", handoff_delay=0.3)
    req = cluster.request
    await req("PUT", f"{GROUPS}/pin", json={"projects": ["default"]})
    await req("PUT", f"{GROUPS}/pin/bindings/only", json={"node": "busy"})
    await req("PUT", f"{GROUPS}/lopsided", json={"projects": ["default"]})
    await req("PUT", f"{GROUPS}/lopsided/bindings/big", json={"node": "busy", "weight": 1000})
    await req("PUT", f"{GROUPS}/lopsided/bindings/small", json={"node": "spare", "weight": 1})
    blocker = f"touch {tmp_path}/blocking; sleep 5"
    await req("PUT", f"{JOBS}/block", json={"command": blocker, "target": {"group": "pin"}})
    await req("PUT", f"{JOBS}/work", json={"command": "true", "target": {"group": "lopsided"}})
    await wait_for(
        lambda: busy.view and len(busy.view.placement("lopsided", "").candidates) == 2,
        what="bindings seen",
    )
    _, block_run = await req("POST", f"{JOBS}/block/runs", json={})
    await wait_for(lambda: (tmp_path / "blocking").exists(), 20, what="busy is full")
    handoffs_before = handoffs()
    ids = [(await req("POST", f"{JOBS}/work/runs", json={}))[1]["id"] for _ in range(5)]

    async def all_done() -> Any:
        runs = [(await req("GET", f"{RUNS}/{i}"))[1] for i in ids]
        return runs if all(r["status"] == "succeeded" for r in runs) else None

    runs = await wait_for(all_done, 20, what="handed-off runs finished")
    # "busy" is preferred for (nearly) all of them (weight 1000:1) but full: "spare" took them
    # once the hand-off delay had passed.
    assert {r["node"] for r in runs} == {"spare"}
    candidates = busy.view.placement("lopsided", "").candidates
    expected = sum(preferred(attempt_key(i, 1), candidates).node == "busy" for i in ids)
    assert handoffs() - handoffs_before == expected
    _, blocked = await req("GET", f"{RUNS}/{block_run['id']}")
    assert blocked["status"] == "running" and blocked["node"] == "busy"


async def test_group_cli_apply_bind_list_unbind(cluster, tmp_path):
    node = await cluster.start("n1")
    url = cluster.url(node)
    doc = tmp_path / "groups.yaml"
    doc.write_text(
        "name: etl\ndescription: batch\nbindings:\n  - {name: primary, node: n1, weight: 3}\n"
        "---\nname: web\n"
    )
    code, out, err = await asyncio.to_thread(run_cli, url, "group", "apply", "-f", str(doc))
    assert code == 0, err
    assert "group etl applied (1 bindings)" in out
    code, out, _ = await asyncio.to_thread(
        run_cli, url, "group", "bind", "web", "front", "--node", "n1", "--weight", "2"
    )
    assert code == 0 and "binding web/front -> n1 (weight 2)" in out
    code, out, _ = await asyncio.to_thread(run_cli, url, "group", "list")
    assert "primary->n1(w3)" in out and "front->n1(w2)" in out
    code, out, err = await asyncio.to_thread(
        run_cli, url, "group", "bind", "nope", "x", "--node", "n1"
    )
    assert code == 1 and "(field: group)" in err
    code, out, _ = await asyncio.to_thread(run_cli, url, "group", "unbind", "web", "front")
    assert code == 0
    # grants (D155): a new group is granted to nobody; grant, see, revoke
    code, out, _ = await asyncio.to_thread(run_cli, url, "group", "grant", "etl", "--project", "a")
    assert code == 0 and "group etl: projects a" in out
    code, out, _ = await asyncio.to_thread(run_cli, url, "group", "list")
    assert any(line.split()[:3] == ["etl", "primary->n1(w3)", "a"] for line in out.splitlines())
    code, out, _ = await asyncio.to_thread(run_cli, url, "group", "targets", "a")
    assert code == 0 and "groups: etl" in out and "n1" in out
    code, out, _ = await asyncio.to_thread(run_cli, url, "group", "targets", "b")
    assert code == 0 and "groups: (none)" in out and "n1" not in out  # n1 is reserved by etl
    code, out, _ = await asyncio.to_thread(run_cli, url, "group", "revoke", "etl", "--project", "a")
    assert code == 0 and "group etl: projects (none)" in out
    code, out, err = await asyncio.to_thread(
        run_cli, url, "group", "revoke", "etl", "--project", "a"
    )
    assert code == 1 and "(field: project)" in err
    code, out, _ = await asyncio.to_thread(run_cli, url, "-o", "json", "group", "get", "web")
    assert code == 0 and '"bindings": []' in out
    code, out, _ = await asyncio.to_thread(run_cli, url, "nodes", "disable", "n1")
    assert code == 0 and "n1: disabled" in out
    code, out, _ = await asyncio.to_thread(run_cli, url, "-o", "json", "nodes", "get", "n1")
    assert code == 0 and '"state": "disabled"' in out


async def test_forget_a_node_that_is_down(cluster):
    await cluster.start("n1")
    n2 = await cluster.start("n2")
    await cluster.request("POST", "/api/v1/nodes/n2/disable")
    status, body = await cluster.request("DELETE", "/api/v1/nodes/n2")
    assert (status, body["error"]["field"]) == (409, "node")
    await cluster.stop(n2)
    _, listed = await cluster.request("GET", "/api/v1/nodes")
    assert [(n["id"], n["up"]) for n in listed["nodes"]] == [("n1", True), ("n2", False)]
    assert (await cluster.request("DELETE", "/api/v1/nodes/n2"))[0] == 204
    _, listed = await cluster.request("GET", "/api/v1/nodes")
    assert [n["id"] for n in listed["nodes"]] == ["n1"]
    status, body = await cluster.request("DELETE", "/api/v1/nodes/n2")
    assert (status, body["error"]["field"]) == (404, "node")


async def test_explicit_machine_id_conflict_is_a_clear_error(cluster):
    first = await cluster.start("n1", machine_id=7)
    assert first.store is not None and first.store.ids.machine_id == 7
    cluster.expected_fatal.add("n2")  # it must refuse to start: a fatal stop, on purpose
    second = await cluster.start("n2", machine_id=7)
    assert not second.ready
    assert second.fatal is not None
    assert "machine id 7" in second.fatal and "'n1'" in second.fatal


# -- real node processes ------------------------------------------------------------------------


async def writes_to(etcd, keys, key: str, before: int, after: int) -> int:
    """The writes (puts and deletes) of ``key`` in the revisions ``(before, after]``, from a
    watch of the cluster's prefix up to a marker the test writes after them."""
    await etcd.put(f"{keys.prefix}/test-marker/writes", "after")
    count = 0
    async with asyncio.timeout(30):
        async for batch in etcd.watch(keys.prefix + "/", start_revision=before + 1):
            for ev in batch.events:
                if ev.kv.mod_revision > after:
                    return count
                count += ev.kv.key == key
    raise AssertionError("the watch ended before the marker")


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_weighted_spread_over_hundreds_of_runs_with_three_writes_each(procs, etcd, keys):
    weights = {"w1": 1, "w2": 2, "w3": 3}
    nodes = [procs.start(name, "--capacity", "64", "--handoff-delay", "30") for name in weights]
    async with api_session() as http:
        for n in nodes:
            await wait_ready(http, n)
        base = nodes[0].url
        await call(http, "PUT", f"{base}{GROUPS}/spread", json={"projects": ["default"]})
        for name, w in weights.items():
            status, _ = await call(
                http,
                "PUT",
                f"{base}{GROUPS}/spread/bindings/{name}",
                json={"node": name, "weight": w},
            )
            assert status == 201
        job = {"command": "true", "target": {"group": "spread"}, "keep_runs": 1000}
        await call(http, "PUT", f"{base}{JOBS}/tiny", json=job)

        async def views_ready() -> bool:
            for n in nodes:
                _, body = await call(http, "GET", f"{n.url}/api/v1/placement?group=spread")
                if len(body["candidates"]) != 3:
                    return False
            return True

        await wait_for(views_ready, 20, what="every node sees the bindings")
        total = 300
        audit_before = await etcd.range(keys.audits(), count_only=True)
        before = audit_before.revision
        started = time.monotonic()
        ids = [await trigger(http, base, "tiny") for _ in range(total)]
        runs = await finished(http, base, ids)
        audit_after = await etcd.range(keys.audits(), count_only=True)
        after = audit_after.revision
        # each trigger is a user's change, so it also writes one audit entry (not a run write)
        audited = audit_after.count - audit_before.count
        assert audited == total
        # the nodes' load samples (D257) are the nodes' writes, not the runs': counted apart
        loads_before = await etcd.range(keys.node_loads(), revision=before)
        loads_after = await etcd.range(keys.node_loads(), revision=after)
        seen = {kv.key: kv.version for kv in loads_before.kvs}
        load_writes = sum(kv.version - seen.get(kv.key, 0) for kv in loads_after.kvs)
        bound = 3 * ((time.monotonic() - started) / SAMPLE_EVERY + 1)  # one a node per 10 s
        assert load_writes <= bound, load_writes
        # so are the leader's run-history sums (D318): at most one write per 2 s, not per run
        used = keys.history_used("default")
        used_before = await etcd.range(used, prefix=False, revision=before)
        used_after = await etcd.range(used, prefix=False, revision=after)
        sums = sum(kv.version for kv in used_after.kvs) - sum(kv.version for kv in used_before.kvs)
        assert sums <= (time.monotonic() - started) / 2 + 1, sums
    assert all(r["status"] == "succeeded" for r in runs)
    counts = Counter(r["node"] for r in runs)
    n = sum(counts.values())
    chi2 = sum((counts[k] - n * w / 6) ** 2 / (n * w / 6) for k, w in weights.items())
    # chi-square with 2 degrees of freedom: P(X > 27.6) = 1e-6 for a fair weighted choice.
    assert chi2 < 27.6, counts
    # etcd writes per run: creation, claim, completion (failed claims write nothing).
    # and the run gate's holds (D512, D521): a manual run's admission puts its hold and the last
    # one out writes what is left — at most two writes per admission, fewer in bursts
    gate = await writes_to(etcd, keys, keys.run_admissions("default"), before, after)
    assert gate <= 2 * total, gate
    writes_per_run = (after - before - audited - load_writes - sums - gate) / total
    print(
        f"spread {dict(counts)} chi2={chi2:.2f} etcd writes per run={writes_per_run:.3f} "
        f"(and {load_writes} load samples, {sums} history sums, {gate} run-gate writes)"
    )
    assert writes_per_run <= 3.0


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_capacity_weight_budget_and_priority_are_never_exceeded(procs, tmp_path):
    small = procs.start("small", "--capacity", "2")
    budget = procs.start("budget", "--capacity", "16", "--weight-budget", "4")
    async with api_session() as http:
        for n in (small, budget):
            await wait_ready(http, n)
        base = small.url
        await call(http, "PUT", f"{base}{GROUPS}/heavy", json={"projects": ["default"]})
        await call(
            http, "PUT", f"{base}{GROUPS}/heavy/bindings/b", json={"node": "budget", "weight": 2}
        )
        await call(http, "PUT", f"{base}{GROUPS}/only-small", json={"projects": ["default"]})
        await call(http, "PUT", f"{base}{GROUPS}/only-small/bindings/s", json={"node": "small"})
        await call(
            http,
            "PUT",
            f"{base}{JOBS}/cap",
            json={"command": "sleep 0.4", "target": {"group": "only-small"}},
        )
        await call(
            http,
            "PUT",
            f"{base}{JOBS}/heavy",
            json={"command": "sleep 0.4", "target": {"group": "heavy"}},
        )

        async def views_ready() -> bool:
            for n in (small, budget):
                _, a = await call(http, "GET", f"{n.url}/api/v1/placement?group=heavy")
                _, b = await call(http, "GET", f"{n.url}/api/v1/placement?group=only-small")
                if not (a["candidates"] and b["candidates"]):
                    return False
            return True

        await wait_for(views_ready, 20, what="views")
        ids = [await trigger(http, base, "cap") for _ in range(8)]
        ids += [await trigger(http, base, "heavy") for _ in range(8)]
        runs = await finished(http, base, ids)
        # Priority: while "small" is full, a higher-priority run overtakes the queued ones.
        await call(
            http,
            "PUT",
            f"{base}{JOBS}/low",
            json={"command": "sleep 2", "target": {"group": "only-small"}},
        )
        await call(
            http,
            "PUT",
            f"{base}{JOBS}/high",
            json={"command": "true", "priority": 10, "target": {"group": "only-small"}},
        )
        lows = [await trigger(http, base, "low") for _ in range(6)]
        high = await trigger(http, base, "high")
        order = await finished(http, base, [*lows, high])
    assert all(r["status"] == "succeeded" for r in runs)
    assert {r["node"] for r in runs if r["job"] == "cap"} == {"small"}
    assert {r["node"] for r in runs if r["job"] == "heavy"} == {"budget"}
    overlap = {job: max_overlap([r for r in runs if r["job"] == job]) for job in ("cap", "heavy")}
    print(f"most runs held at once: {overlap}")
    assert overlap["cap"] <= 2  # capacity 2
    assert overlap["heavy"] <= 2  # weight budget 4, binding weight 2
    started = sorted(order, key=lambda r: r["started_at"])
    # Two lows were running when the high-priority run was queued: it is the next to start.
    assert [r["id"] for r in started].index(high) == 2, [
        (r["job"], r["started_at"]) for r in started
    ]


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_drain_finishes_running_runs_starts_none_then_enable_and_remote_shutdown(
    procs, etcd, keys, tmp_path
):
    a = procs.start("node-a", "--handoff-delay", "0.2")
    b = procs.start("node-b", "--handoff-delay", "0.2")
    async with api_session() as http:
        for n in (a, b):
            await wait_ready(http, n)
        base = b.url
        await call(http, "PUT", f"{base}{GROUPS}/pin-a", json={"projects": ["default"]})
        await call(http, "PUT", f"{base}{GROUPS}/pin-a/bindings/x", json={"node": "node-a"})
        # A long run holds its node until the test opens the gate: the drain must begin while
        # both are running, however slowly the CLI starts (a fixed `sleep 3` could end first
        # under load, and the drain then answered "drained"). Bounded: 60 s at most.
        gate = tmp_path / "release"
        long_cmd = (
            f"touch {tmp_path}/started-$CRONMESH_RUN_ID; i=0; "
            f"while [ ! -e {gate} ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done"
        )
        await call(
            http,
            "PUT",
            f"{base}{JOBS}/long",
            json={"command": long_cmd, "target": {"group": "pin-a"}},
        )
        await call(http, "PUT", f"{base}{JOBS}/short", json={"command": "true"})

        async def a_sees_group() -> bool:
            _, body = await call(http, "GET", f"{a.url}/api/v1/placement?group=pin-a")
            return bool(body["candidates"])

        await wait_for(a_sees_group, 20, what="group seen")
        longs = [await trigger(http, base, "long") for _ in range(2)]
        await wait_for(
            lambda: all((tmp_path / f"started-{i}").exists() for i in longs),
            30,
            what="longs started",
        )
        code, out, err = await asyncio.to_thread(
            run_cli, base, "nodes", "drain", "node-a", "--reason", "kernel update"
        )
        assert code == 0 and "node-a: draining" in out, (out, err)
        drained_at = (await etcd.get(keys.node_state("node-a"))).mod_revision

        async def state_of(node_id: str) -> str:
            _, body = await call(http, "GET", f"{base}/api/v1/nodes/{node_id}")
            return str(body["state"])

        # New runs while node-a drains: all go to node-b, including long ones pinned to node-a
        # (they wait with a reason instead).
        shorts = [await trigger(http, base, "short") for _ in range(12)]
        pinned = await trigger(http, base, "long")
        pinned_run = await run_of(http, base, pinned)
        assert pinned_run["status"] == "pending"
        assert "node-a is draining" in pinned_run["placement"]["reason"]
        shorts_done = await finished(http, base, shorts)
        assert await state_of("node-a") == "draining"  # the longs still run: not drained yet
        gate.touch()
        longs_done = await finished(http, base, longs)

        await wait_for(lambda: _eq(state_of("node-a"), "drained"), 20, what="drained")
        # Still waiting: draining is not an outage, the run is kept.
        assert (await run_of(http, base, pinned))["status"] == "pending"
        code, out, _ = await asyncio.to_thread(run_cli, base, "nodes", "list")
        row = next(line for line in out.splitlines() if line.startswith("node-a"))
        assert " up " in row and "drained" in row and f"0/{default_capacity()}" in row, out
        code, out, _ = await asyncio.to_thread(run_cli, base, "nodes", "enable", "node-a")
        assert code == 0 and "node-a: enabled" in out
        pinned_done = (await finished(http, base, [pinned]))[0]
        # Remote shutdown: node-a acknowledges, stops gracefully and exits 0.
        code, out, _ = await asyncio.to_thread(run_cli, base, "nodes", "shutdown", "node-a")
        assert code == 0, out
        rc = await asyncio.to_thread(a.proc.wait, 30)
        assert rc == 0
        _, body = await call(http, "GET", f"{base}/api/v1/nodes/node-a")
        assert body["up"] is False and body["disconnect_requested"] is False
        assert body["last_heartbeat"]  # when it stopped
    assert all(r["status"] == "succeeded" and r["node"] == "node-b" for r in shorts_done)
    # The runs that were running when the drain began finished normally (not killed).
    assert all(r["status"] == "succeeded" and r["node"] == "node-a" for r in longs_done)
    assert all(r["attempts"][-1]["claim_revision"] < drained_at for r in longs_done)
    assert pinned_done["status"] == "succeeded" and pinned_done["node"] == "node-a"
    assert pinned_done["attempts"][-1]["claim_revision"] > drained_at


async def _eq(coro: Any, value: Any) -> bool:
    return bool(await coro == value)


@pytest.mark.slow
async def test_node_list_shows_every_node_and_machine_id_conflict_exits(procs):
    a = procs.start("lister", "--property", "zone=eu1", "--owner", "ops", "--machine-id", "42")
    async with api_session() as http:
        await wait_ready(http, a)
        clash = procs.start("clasher", "--machine-id", "42")
        clash.expected_codes.add(2)  # refusing to start is what this test wants
        rc = await asyncio.to_thread(clash.proc.wait, 30)
        assert rc == 2
        assert "machine id 42" in clash.log_path.read_text()
        _, body = await call(http, "GET", f"{a.url}/api/v1/nodes")
    (node,) = [n for n in body["nodes"] if n["id"] == "lister"]
    assert node["up"] and node["state"] == "enabled" and node["owner"] == "ops"
    assert node["properties"] == {"zone": "eu1"} and node["machine_id"] == 42
    assert node["capacity"] == default_capacity() and node["running"] == 0 and node["version"]
    assert node["last_heartbeat"] and node["address"] == f"127.0.0.1:{a.port}"
    a.signal(signal.SIGTERM)
