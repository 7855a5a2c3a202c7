"""Counts that manual runs hold a place in until written (D512, D513): the cap on a project's
unfinished runs, and a hook's idempotency keys. The cap on unfinished runs (D512). Each trigger
counted the project's unfinished runs, then wrote its run: a burst of concurrent triggers all
passed one count, so the 2,000 cap could be overshot by one ``run_burst`` (1,000) per node. An
admission now holds its runs against the cap in etcd until they are written, and the holds are
counted; two nodes, real etcd, the bursts sent over HTTP."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import aiohttp

from cluster.hooks import sign
from cluster.secretbox import new_key
from tests.conftest import api_headers, wait_for
from tests.integration.test_access import make_user

A = "/api/v1/projects/a"
JOB = {"name": "j", "command": "true", "target": {"selector": "role=nowhere"}}  # stays pending
CAP, SHORT, BURST = 30, 3, 40
SECRET = "s3cret-for-the-hook-0123456789"
FAST = {"runs_per_second": 10000, "run_burst": 10000}  # the rate is not what is tested


async def triggers(cluster, nodes, token: str, count: int, body=None) -> Counter[int]:
    async with aiohttp.ClientSession(headers=api_headers(token)) as http:

        async def one(i: int) -> int:
            url = cluster.url(nodes[i % len(nodes)], f"{A}/jobs/j/runs")
            async with http.post(url, json=body or {}) as resp:
                await resp.read()
                return resp.status

        return Counter(await asyncio.gather(*(one(i) for i in range(count))))


async def unfinished(etcd, keys) -> int:
    return (await etcd.range(keys.actives("a"), count_only=True)).count


async def test_a_burst_of_triggers_on_two_nodes_cannot_pass_the_pending_cap(cluster, etcd, keys):
    nodes = [await cluster.start("c1"), await cluster.start("c2")]
    status, body = await cluster.request("PUT", f"{A}/jobs/j", json=JOB)
    assert status == 201, body
    status, body = await cluster.request(
        "PUT", f"{A}/run-limits", json={"max_pending_runs": CAP, **FAST}
    )
    assert status == 200, body
    op = await make_user(cluster, "op", {"a": "operator"})
    for _ in range(CAP - SHORT):
        status, body = await cluster.request("POST", f"{A}/jobs/j/runs", json={})
        assert status == 201, body
    for _ in range(5):  # five bursts, each SHORT under the cap (one alone may not race)
        cap = await unfinished(etcd, keys) + SHORT
        limits = {"max_pending_runs": cap, **FAST}
        status, body = await cluster.request("PUT", f"{A}/run-limits", json=limits)
        assert status == 200, body
        answers = await triggers(cluster, nodes, op, BURST)
        assert set(answers) <= {201, 403}, answers  # refused by the cap, not by a conflict
        # at most the room; a run held and written at once counts twice for a moment, so a
        # burst may leave a place a retry takes (D512)
        assert 1 <= answers[201] <= SHORT, (cap, answers)
        assert await unfinished(etcd, keys) == cap - SHORT + answers[201]
    # the holds went with their writes: the next trigger is refused by the count alone
    await wait_for(
        lambda: _absent(etcd, keys.run_admissions("a")), 10, what="the admissions released"
    )


async def _absent(etcd, key: str) -> bool:
    return await etcd.get(key) is None


async def test_a_burst_under_the_cap_is_admitted_whole(cluster, etcd, keys):
    """What a deployment script or a GitOps tool may do: many triggers at once, far from the
    cap, on two nodes; none is refused (a refusal a retry would pass is a cost)."""
    nodes = [await cluster.start("c1"), await cluster.start("c2")]
    status, body = await cluster.request("PUT", f"{A}/jobs/j", json=JOB)
    assert status == 201, body
    status, body = await cluster.request("PUT", f"{A}/run-limits", json=FAST)
    assert status == 200, body
    op = await make_user(cluster, "op", {"a": "operator"})
    answers = await triggers(cluster, nodes, op, 200)
    assert answers == Counter({201: 200}), answers
    assert await unfinished(etcd, keys) == 200


KEYS = 5  # a hook's idempotency keys, lowered from 10,000 for the test


async def test_a_burst_of_keyed_deliveries_cannot_pass_a_hooks_keys(
    cluster, etcd, keys, tmp_path, monkeypatch
):
    """A hook remembers at most 10,000 idempotency keys (a day each); the count was read, then
    the key written, so a burst of deliveries with new keys all passed one count (D513)."""
    monkeypatch.setattr("cluster.hook_store.MAX_IDEMPOTENCY_KEYS", KEYS)
    secrets_key = tmp_path / "secrets.key"
    secrets_key.write_text(new_key() + "\n")
    secrets_key.chmod(0o600)
    nodes = [await cluster.start(n, secrets_key_file=str(secrets_key)) for n in ("c1", "c2")]
    status, body = await cluster.request("PUT", f"{A}/jobs/j", json=JOB)
    assert status == 201, body
    status, body = await cluster.request("PUT", f"{A}/run-limits", json=FAST)
    assert status == 200, body
    hook = {"target": {"job": "j"}, "secret": SECRET, "rate_per_minute": 6000, "burst": 1000}
    status, body = await cluster.request("PUT", f"{A}/hooks/h", json=hook)
    assert status == 201, body
    async with aiohttp.ClientSession() as http:

        async def one(i: int) -> int:
            raw = b"{}"
            headers = {
                "Content-Type": "application/json",
                "X-Cronmesh-Signature": sign(SECRET.encode(), int(time.time()), raw),
                "Idempotency-Key": f"k{i}",
            }
            url = cluster.url(nodes[i % 2], "/api/v1/hooks/a/h")
            async with http.post(url, data=raw, headers=headers) as resp:
                await resp.read()
                return resp.status

        answers = Counter(await asyncio.gather(*(one(i) for i in range(BURST))))
    assert set(answers) <= {202, 429}, answers
    assert 1 <= answers[202] <= KEYS, answers
    held = (await etcd.range(keys.hook_deliveries("a", "h"), count_only=True)).count
    assert held == answers[202], answers


async def test_a_burst_of_creations_cannot_pass_a_projects_job_and_workflow_quotas(
    cluster, etcd, keys
):
    """The jobs and workflows quotas were a count, then a write (D162: "concurrent creates may
    overshoot by their number"); a creation now holds its place in the count until written
    (D515)."""
    nodes = [await cluster.start("c1"), await cluster.start("c2")]
    quotas = {"jobs": CAP, "workflows": CAP}
    status, body = await cluster.request("PUT", "/api/v1/projects/a", json={"quotas": quotas})
    assert status in (200, 201), body
    editor = await make_user(cluster, "ed", {"a": "editor"})
    kinds = {
        "jobs": lambda n: {"name": n, "command": "true"},
        "workflows": lambda n: {"name": n, "tasks": [{"name": "t", "command": "true"}]},
    }
    for kind, doc in kinds.items():
        for i in range(CAP - SHORT):
            status, body = await cluster.request("PUT", f"{A}/{kind}/f{i}", json=doc(f"f{i}"))
            assert status == 201, body
        async with aiohttp.ClientSession(headers=api_headers(editor)) as http:

            async def one(i: int, kind: str = kind, doc=doc) -> int:
                url = cluster.url(nodes[i % 2], f"{A}/{kind}/x{i}")
                async with http.put(url, json=doc(f"x{i}")) as resp:
                    await resp.read()
                    return resp.status

            answers = Counter(await asyncio.gather(*(one(i) for i in range(BURST))))
        assert set(answers) <= {201, 403}, (kind, answers)
        assert 1 <= answers[201] <= SHORT, (kind, answers)
        prefix = keys.jobs("a") if kind == "jobs" else keys.workflows("a")
        stored = (await etcd.range(prefix, count_only=True)).count
        assert stored == CAP - SHORT + answers[201], (kind, answers)


async def test_a_parallel_apply_of_many_jobs_is_admitted_whole(cluster, etcd, keys):
    """What a GitOps tool does: hundreds of job creations at once on two nodes, far from the
    quota; none is refused (D500's compare on the jobs prefix refused 63% of 500: D515)."""
    nodes = [await cluster.start("c1"), await cluster.start("c2")]
    editor = await make_user(cluster, "ed", {"a": "editor"})
    async with aiohttp.ClientSession(headers=api_headers(editor)) as http:

        async def one(i: int) -> int:
            url = cluster.url(nodes[i % 2], f"{A}/jobs/g{i}")
            async with http.put(url, json={"name": f"g{i}", "command": "true"}) as resp:
                await resp.read()
                return resp.status

        answers = Counter(await asyncio.gather(*(one(i) for i in range(300))))
    assert answers == Counter({201: 300}), answers
    assert (await etcd.range(keys.jobs("a"), count_only=True)).count == 300
