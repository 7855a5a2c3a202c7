"""Real `cronmesh node` processes: failover, worker death, graceful stop, etcd outages."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys

import aiohttp
import pytest

from nodes.devtools.embedded import EtcdProcess, free_port
from tests.chaos.harness import leader_of, wait_ready
from tests.conftest import ROOT, api_session, node_env, run_cli, wait_for

JOBS = "/api/v1/projects/default/jobs"
RUNS = "/api/v1/projects/default/runs"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] != "Z"


async def get(http, url):
    async with http.get(url, timeout=aiohttp.ClientTimeout(total=5)) as r:
        return r.status, (
            await r.json() if r.content_type == "application/json" else await r.text()
        )


@pytest.mark.slow
async def test_status_shows_peers_and_sigterm_hands_off_leadership_at_once(procs, etcd, keys):
    nodes = [procs.start(f"node-{i + 1}", lease_ttl=5) for i in range(3)]
    async with api_session() as http:
        for n in nodes:
            await wait_ready(http, n)
        leader = await wait_for(lambda: leader_of(http, nodes), 10, what="leader")
        status, body = await get(http, f"{nodes[1].url}/status")
        assert status == 200 and body["leader"] == leader
        assert sorted(n["id"] for n in body["nodes"] if n["up"]) == ["node-1", "node-2", "node-3"]
        victim = next(n for n in nodes if n.node_id == leader)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        victim.signal(signal.SIGTERM)
        others = [n for n in nodes if n is not victim]

        async def new_leader():
            got = await leader_of(http, others)
            return got if got and got != leader else None

        await wait_for(new_leader, 5, interval=0.02, what="hand-off")
        handoff = loop.time() - t0
        assert handoff < 2.5, handoff  # resigned at once, not after the 5 s lease TTL
        await asyncio.to_thread(victim.proc.wait, 20)
        assert victim.proc.returncode == 0
        status, body = await get(http, f"{others[0].url}/status")
        down = [n for n in body["nodes"] if not n["up"]]
        assert [n["id"] for n in down] == [victim.node_id]


@pytest.mark.slow
async def test_worker_killed_mid_run_turns_lost_and_is_retried_elsewhere(
    procs, etcd, keys, tmp_path
):
    a = procs.start("node-a", lease_ttl=2)
    async with api_session() as http:
        await wait_ready(http, a)
        marker = tmp_path / "started"
        sleeper = tmp_path / "sleeper"
        job = {
            "name": "long",
            "command": f'echo "$CRONMESH_NODE $CRONMESH_ATTEMPT" >> {marker}; '
            f'if [ "$CRONMESH_ATTEMPT" = 1 ]; then echo $$ > {sleeper}; exec sleep 300; fi',
            "retries": 1,
            "retry_interval": 0,
        }
        async with http.post(f"{a.url}{JOBS}", json=job) as r:
            assert r.status == 201
        async with http.post(f"{a.url}{JOBS}/long/runs", json={}) as r:
            run = await r.json()
        await wait_for(lambda: marker.exists() and marker.read_text(), 10, what="first attempt")
        claim = await etcd.get(keys.claim(run["id"]))
        assert claim is not None and json.loads(claim.value)["node"] == "node-a"
        b = procs.start("node-b", lease_ttl=2)
        await wait_ready(http, b)
        await wait_for(lambda: sleeper.exists() and sleeper.read_text().strip(), 10, what="pid")
        pid = int(sleeper.read_text())
        a.signal(signal.SIGKILL)
        a.proc.wait()
        # Its job dies with it (the fence, D151): no `sleep 300` left beside the retry.
        await wait_for(lambda: not _alive(pid), 1.0, interval=0.01, what="the job to die")

        async def finished():
            status, body = await get(http, f"{b.url}{RUNS}/{run['id']}")
            return body if body["status"] == "succeeded" else None

        done = await wait_for(finished, 20, what="retried run")
        assert [x["status"] for x in done["attempts"]] == ["lost", "succeeded"]
        assert done["attempts"][0]["node"] == "node-a" and done["node"] == "node-b"
        assert done["attempt"] == 2
        assert marker.read_text().split("\n")[:2] == ["node-a 1", "node-b 2"]
        assert await etcd.get(keys.claim(run["id"])) is None


@pytest.mark.slow
async def test_node_waits_for_etcd_and_recovers_from_an_outage(tmp_path, prefix):
    port = free_port()
    server = EtcdProcess(tmp_path / "etcd", client_port=port)
    api = free_port()
    log = open(tmp_path / "node.log", "ab")
    node = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "nodes.cli",
            "node",
            "--etcd",
            server.endpoint,
            "--listen",
            f"127.0.0.1:{api}",
            "--node-id",
            "lonely",
            "--prefix",
            prefix,
            "--lease-ttl",
            "3",
            "--data-dir",
            str(tmp_path / "data"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=str(ROOT),
        env=node_env(),
    )
    url = f"http://127.0.0.1:{api}"
    try:
        async with api_session() as http:
            # A cold process start: the suite's start-up deadline (harness.wait_ready: 60 s). 15 s
            # was not enough at load 12 on 2 cores (the node had not logged a line by then).
            await wait_for(lambda: _status_is(http, f"{url}/healthz", 200), 60, what="healthz")
            assert (await get(http, f"{url}/readyz"))[0] == 503
            assert (await get(http, f"{url}{JOBS}"))[0] == 503
            await asyncio.to_thread(server.start)
            await wait_for(lambda: _status_is(http, f"{url}/readyz", 200), 60, what="ready")
            async with http.post(f"{url}{JOBS}", json={"name": "j", "command": "true"}) as r:
                assert r.status == 201
            # etcd goes away for longer than the lease TTL, then comes back.
            server.kill()
            await wait_for(lambda: _status_is(http, f"{url}/readyz", 503), 30, what="not ready")
            assert node.poll() is None
            await asyncio.to_thread(server.start)
            await wait_for(lambda: _status_is(http, f"{url}/readyz", 200), 60, what="ready again")
            async with http.post(f"{url}{JOBS}/j/runs", json={}) as r:
                run = await r.json()

            async def ok():
                return (await get(http, f"{url}{RUNS}/{run['id']}"))[1]["status"] == "succeeded"

            await wait_for(ok, 30, what="run after recovery")
    finally:
        node.terminate()
        node.wait(20)
        log.close()
        server.stop()


async def _status_is(http, url, want):
    try:
        return (await get(http, url))[0] == want
    except (aiohttp.ClientError, TimeoutError):
        return False


@pytest.mark.slow
@pytest.mark.timeout(300)  # a dozen CLI processes: ~1 s of CPU each, 5-10 s at load 15-25
async def test_cli_roundtrip(procs, tmp_path):
    node = procs.start("cli-node")
    async with api_session() as http:
        await wait_ready(http, node)
    job = tmp_path / "job.yaml"
    job.write_text(
        'name: greet\ncommand: echo "hello $CRONMESH_PARAM_WHO"\nparameters: {who: world}\n'
    )

    def cli(*args):
        return run_cli(node.url, *args)

    assert cli("job", "apply", "-f", str(job))[0] == 0
    code, out, _ = cli("job", "list")
    assert code == 0 and "greet" in out
    code, out, _ = cli("job", "trigger", "greet", "--param", "who=cli")
    run_id = out.strip()
    assert code == 0 and run_id.isdigit()

    async def logs():
        code, out, _ = cli("run", "logs", run_id)
        return code == 0 and "hello cli" in out

    await wait_for(logs, 15, what="logs")
    code, out, _ = cli("-o", "json", "run", "get", run_id)
    assert json.loads(out)["status"] == "succeeded"
    code, _, err = cli("job", "get", "nope")
    assert code == 1 and "not found" in err
    bad = tmp_path / "bad.yaml"
    bad.write_text('name: bad\ncommand: "true"\ntimeout: -1\n')
    code, _, err = cli("job", "apply", "-f", str(bad))
    assert code == 1 and "timeout" in err
    assert cli("job", "delete", "greet")[0] == 0


@pytest.mark.slow
async def test_sigterm_drains_running_runs_before_exiting(procs, tmp_path):
    # the drain lasts until the test has seen it (a run of `sleep 2` could end before a test
    # starved by a loaded machine looked: the node was gone, D376); the drain timeout outlasts it
    node = procs.start("drainer", "--drain-timeout", "60")
    async with api_session() as http:
        await wait_ready(http, node)
        marker, release = tmp_path / "began", tmp_path / "release"
        wait = f"for i in $(seq 600); do [ -e {release} ] && break; sleep 0.1; done"
        job = {"name": "slowish", "command": f"touch {marker}; {wait}; echo finished"}
        async with http.post(f"{node.url}{JOBS}", json=job) as r:
            assert r.status == 201
        async with http.post(f"{node.url}{JOBS}/slowish/runs", json={}) as r:
            run = await r.json()
        await wait_for(marker.exists, 30, what="run started")
        node.signal(signal.SIGTERM)
        # Not ready any more while draining, but still answering.
        await wait_for(lambda: _status_is(http, f"{node.url}/readyz", 503), 30, what="draining")
        assert node.alive()  # the run holds the drain
        release.touch()
        await asyncio.to_thread(node.proc.wait, 60)
        assert node.proc.returncode == 0
    other = procs.start("reader")
    async with api_session() as http:
        await wait_ready(http, other)
        status, body = await get(http, f"{other.url}{RUNS}/{run['id']}")
        assert body["status"] == "succeeded" and body["node"] == "drainer"


@pytest.mark.slow
async def test_etcdctl_answers_who_leads(procs, etcd_server, prefix):
    """The docs/etcd-layout.md recipe for the leader agrees with /status."""
    from nodes.devtools.embedded import etcd_binary

    nodes = [procs.start(f"e-{i}") for i in range(2)]
    async with api_session() as http:
        for n in nodes:
            await wait_ready(http, n)
        leader = await wait_for(lambda: leader_of(http, nodes), 10, what="leader")
    out = subprocess.run(
        [
            etcd_binary("etcdctl"),
            "--endpoints",
            etcd_server.endpoint,
            "get",
            "--prefix",
            f"{prefix}/election/scheduler/",
            "--sort-by=CREATE",
            "--order=ASCEND",
            "--limit",
            "1",
            "--print-value-only",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == leader


@pytest.mark.slow
async def test_target_selector_places_runs_and_any_node_serves_their_logs(procs):
    a = procs.start("node-a", "--property", "role=batch", "--property", "zone=eu1")
    b = procs.start("node-b", "--property", "role=web")
    async with api_session() as http:
        for n in (a, b):
            await wait_ready(http, n)
        job = {
            "name": "placed",
            "command": "echo ran on $CRONMESH_NODE",
            "target": {"selector": "role=batch, zone in (eu1, eu2)"},
        }
        async with http.post(f"{b.url}{JOBS}", json=job) as r:
            assert r.status == 201
        ids = []
        for _ in range(5):
            async with http.post(f"{b.url}{JOBS}/placed/runs", json={}) as r:
                ids.append((await r.json())["id"])

        async def all_done():
            runs = [(await get(http, f"{b.url}{RUNS}/{i}"))[1] for i in ids]
            return runs if all(r["status"] == "succeeded" for r in runs) else None

        runs = await wait_for(all_done, 15, what="placed runs")
        assert {r["node"] for r in runs} == {"node-a"}
        status, text = await get(http, f"{b.url}{RUNS}/{ids[0]}/logs")  # proxied from node-a
        assert status == 200 and "ran on node-a" in text
        a.signal(signal.SIGTERM)
        await asyncio.to_thread(a.proc.wait, 20)
        status, body = await get(http, f"{b.url}{RUNS}/{ids[0]}/logs")
        assert status == 503 and "node-a" in body["error"]["message"]
