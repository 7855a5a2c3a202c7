"""Execution logs against a real S3 server (SeaweedFS) and real etcd: objects byte for byte,
ranged reads, caps, an S3 outage, leftover spools after a crash, live tail across nodes."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import uuid

import aiohttp
import boto3
import pytest
from botocore.config import Config

from tests.chaos.harness import wait_ready
from tests.conftest import api_session, run_cli, wait_for
from tests.seaweed import SeaweedS3

JOBS = "/api/v1/projects/default/jobs"
RUNS = "/api/v1/projects/default/runs"
LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (stdout|stderr|cronmesh) (.*)$")
FINISHED = ("succeeded", "failed", "timed_out", "cancelled", "lost")


def s3_client(server: SeaweedS3):
    env = server.env()
    return boto3.client(
        "s3",
        endpoint_url=server.endpoint,
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}),
    )


def new_bucket(server: SeaweedS3) -> str:
    name = f"t{uuid.uuid4().hex[:12]}"
    s3_client(server).create_bucket(Bucket=name)
    return name


def get_object(server: SeaweedS3, bucket: str, key: str) -> bytes | None:
    try:
        return s3_client(server).get_object(Bucket=bucket, Key=key)["Body"].read()
    except s3_client(server).exceptions.NoSuchKey:
        return None


PACK_POINTER = re.compile(r"s3://[^/]+/(?P<key>.+\.pack)#(?P<off>\d+)\+(?P<len>\d+)")


def stored_log(server: SeaweedS3, bucket: str, log_url: str | None, own_key: str) -> bytes | None:
    """An attempt's stored log as its record names it: a range of a pack (D440) if the record
    points into one and the pack is there, else its own object at ``own_key``."""
    m = PACK_POINTER.fullmatch(log_url or "")
    if m is not None:
        start, length = int(m["off"]), int(m["len"])
        try:
            got = s3_client(server).get_object(
                Bucket=bucket, Key=m["key"], Range=f"bytes={start}-{start + length - 1}"
            )
            return got["Body"].read()
        except s3_client(server).exceptions.NoSuchKey:
            pass
    return get_object(server, bucket, own_key)


def parsed(text: str) -> list[tuple[str, str]]:
    out = []
    for line in text.split("\n")[:-1] if text.endswith("\n") else text.split("\n"):
        m = LINE.match(line)
        assert m, f"not a log line: {line!r}"
        out.append((m.group(1), m.group(2)))
    return out


def stream_of(text: str, stream: str) -> list[str]:
    return [body for s, body in parsed(text) if s == stream]


@pytest.fixture
def aws_env(s3_server, monkeypatch):
    for k, v in s3_server.env().items():
        monkeypatch.setenv(k, v)
    return s3_server


async def finished_run(cluster, run_id, timeout=30):
    async def done():
        status, run = await cluster.request("GET", f"{RUNS}/{run_id}")
        return run if status == 200 and run["status"] in FINISHED else None

    return await wait_for(done, timeout, what=f"run {run_id} finished")


async def trigger(cluster, job: dict) -> str:
    status, body = await cluster.request("PUT", f"{JOBS}/{job['name']}", json=job)
    assert status in (200, 201), body
    status, run = await cluster.request("POST", f"{JOBS}/{job['name']}/runs", json={})
    assert status == 201, run
    return run["id"]


async def test_attempt_log_is_one_text_object_byte_for_byte_with_ranged_reads(cluster, aws_env):
    bucket = new_bucket(aws_env)
    # no packs: the attempt's own object, as every log over 64 KiB has (D440)
    await cluster.start(log_store=f"s3://{bucket}/logs", log_pack_window=0)
    cmd = (
        "printf 'hello\\nworld\\n'; printf 'err line\\n' >&2; "
        "printf '\\377\\000bin\\n'; printf 'tail-no-newline'"
    )
    run_id = await trigger(cluster, {"name": "bytes", "command": cmd})
    run = await finished_run(cluster, run_id)
    assert run["status"] == "succeeded"
    key = f"logs/default/bytes/{run_id}/1.log"
    assert run["attempts"][0]["log"] == f"s3://{bucket}/{key}"
    obj = await wait_for(lambda: get_object(aws_env, bucket, key), 20, what="log object")
    assert stream_of(obj.decode(), "stdout") == [
        "hello",
        "world",
        "\\xff\x00bin",
        "tail-no-newline",
    ]
    assert stream_of(obj.decode(), "stderr") == ["err line"]
    status, text = await cluster.request("GET", f"{RUNS}/{run_id}/logs")
    assert status == 200 and text.encode() == obj
    status, text = await cluster.request("GET", f"{RUNS}/{run_id}/logs?tail=1")
    assert status == 200 and text.encode() == obj.splitlines(keepends=True)[-1]
    status, text = await cluster.request("GET", f"{RUNS}/{run_id}/logs?offset=5&length=20")
    assert status == 200 and text.encode() == obj[5:25]
    status, text = await cluster.request("GET", f"{RUNS}/{run_id}/logs?offset=30")
    assert status == 200 and text.encode() == obj[30:]
    status, body = await cluster.request("GET", f"{RUNS}/{run_id}/logs?format=json")
    assert [f["text"] for f in body["frames"] if f["stream"] == "stderr"] == ["err line"]
    status, body = await cluster.request("GET", f"{RUNS}/{run_id}/logs?tail=x")
    assert status == 400 and body["error"]["field"] == "tail"
    status, body = await cluster.request("GET", f"{RUNS}/{run_id}/logs?tail=1&offset=3")
    assert status == 400 and body["error"]["field"] == "tail"
    # nothing left behind: no spool (removed just after the upload), no segments
    spool = cluster.nodes[0][0].logs.spool
    await wait_for(lambda: not list(spool.root.rglob("*.spool")), 10, what="the spool removed")
    listing = s3_client(aws_env).list_objects_v2(Bucket=bucket, Prefix="logs/")
    assert [o["Key"] for o in listing["Contents"]] == [key]


async def test_an_attempt_that_prints_nothing_has_an_empty_log_and_no_object(cluster, aws_env):
    bucket = new_bucket(aws_env)
    await cluster.start(log_store=f"s3://{bucket}/logs")
    quiet = await trigger(cluster, {"name": "quiet", "command": "true"})
    loud = await trigger(cluster, {"name": "loud", "command": "echo hi"})
    run = await finished_run(cluster, quiet)
    assert run["status"] == "succeeded"
    assert run["attempts"][0]["output_bytes"] == 0 and run["attempts"][0]["log"] is None
    assert (await finished_run(cluster, loud))["attempts"][0]["output_bytes"] == 3
    status, text = await cluster.request("GET", f"{RUNS}/{quiet}/logs")
    assert (status, text) == (200, "")
    status, body = await cluster.request("GET", f"{RUNS}/{quiet}/logs?format=json")
    assert status == 200 and body["frames"] == []
    status, text = await cluster.request("GET", f"{RUNS}/{quiet}/logs?follow=1", timeout=10)
    assert (status, text) == (200, "")  # ends at once: the attempt is over
    # the loud run's log is shipped (in a pack: D440); the quiet one never had a spool or a log
    where = (await finished_run(cluster, loud))["attempts"][0]["log"]
    m = PACK_POINTER.fullmatch(where)
    assert m is not None and m["key"].startswith("logs/default/_packs/"), where
    got = await wait_for(
        lambda: stored_log(aws_env, bucket, where, "-"), 20, what="the loud run's log"
    )
    assert stream_of(got.decode(), "stdout") == ["hi"]
    spool = cluster.nodes[0][0].logs.spool
    await wait_for(lambda: not list(spool.root.rglob("*.spool")), 10, what="the spool removed")
    listing = s3_client(aws_env).list_objects_v2(Bucket=bucket, Prefix="logs/")
    assert [o["Key"] for o in listing["Contents"]] == [m["key"]]


@pytest.mark.timeout(180)
async def test_a_fast_100mb_writer_is_drained_and_capped_with_a_marker(cluster, aws_env):
    bucket = new_bucket(aws_env)
    await cluster.start(log_store=f"s3://{bucket}", log_run_cap=2 * 1024 * 1024)
    cmd = "head -c 104857600 /dev/urandom; echo done-writing >&2"
    run_id = await trigger(cluster, {"name": "flood", "command": cmd, "timeout": 120})
    run = await finished_run(cluster, run_id, timeout=150)
    assert run["status"] == "succeeded", run  # never blocked on a full pipe
    obj = await wait_for(
        lambda: get_object(aws_env, bucket, f"default/flood/{run_id}/1.log"), 30, what="object"
    )
    lines = parsed(obj.decode())
    assert ("cronmesh", "output truncated at 2097152 bytes (per-run cap)") in lines
    assert lines[-1][0] == "cronmesh"
    assert len(obj) < 12 * 1024 * 1024  # 2 MiB of bytes, escaped


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_s3_outage_loses_no_byte_and_keeps_the_order(cluster, tmp_path, monkeypatch):
    s3 = await asyncio.to_thread(SeaweedS3(tmp_path / "s3-outage").start)
    try:
        for k, v in s3.env().items():
            monkeypatch.setenv(k, v)
        bucket = new_bucket(s3)
        node = await cluster.start(log_store=f"s3://{bucket}/x", log_segment_interval=0.5)
        slow = "for i in $(seq 1 30); do echo slow-$i; sleep 0.1; done"
        first = await trigger(cluster, {"name": "slow", "command": slow})
        await wait_for(
            lambda: node.logs.spool.active, 20, interval=0.02, what="the slow run writing"
        )
        await asyncio.to_thread(s3.stop, True)  # a crash; never block this loop (the node's)
        quick = "for i in $(seq 1 500); do echo quick-$i; done; printf end"
        others = [await trigger(cluster, {"name": "quick", "command": quick}) for _ in range(3)]
        for run_id in [first, *others]:
            assert (await finished_run(cluster, run_id))["status"] == "succeeded"
        # S3 is down: every log waits in the spool (the quick ones packed, D440)
        assert node.logs.uploader.backlog == 4  # the short ones packed (D440), or all four
        status, text = await cluster.request("GET", f"{RUNS}/{others[0]}/logs")
        assert status == 200 and stream_of(text, "stdout")[-1] == "end"  # served from the spool

        async def backlog_is(n):
            _, text = await cluster.request("GET", "/metrics")
            m = re.search(r"^cronmesh_log_spool_backlog_files (\S+)$", text, re.M)
            return m is not None and float(m.group(1)) == n

        await wait_for(lambda: backlog_is(4), 15, what="backlog metric at 4")
        await asyncio.to_thread(s3.start)

        records = [await finished_run(cluster, r) for r in [first, *others]]

        def objects():
            found = [
                stored_log(
                    s3, bucket, r["attempts"][0]["log"], f"x/default/{r['job']}/{r['id']}/1.log"
                )
                for r in records
            ]
            return found if all(found) else None

        found = await wait_for(objects, 60, interval=0.5, what="logs uploaded after the outage")
        assert stream_of(found[0].decode(), "stdout") == [f"slow-{i}" for i in range(1, 31)]
        for obj in found[1:]:
            assert stream_of(obj.decode(), "stdout") == [f"quick-{i}" for i in range(1, 501)] + [
                "end"
            ]
        await wait_for(lambda: not list(node.logs.spool.root.rglob("*.spool")), 10)
        await wait_for(lambda: backlog_is(0), 15, what="backlog metric back to 0")
        listing = s3_client(s3).list_objects_v2(Bucket=bucket, Prefix="x/")
        assert not [o["Key"] for o in listing["Contents"] if ".parts/" in o["Key"]]
    finally:
        await asyncio.to_thread(s3.stop)


@pytest.mark.slow
@pytest.mark.timeout(150)
async def test_leftover_spool_of_a_killed_node_is_uploaded_when_it_starts_again(procs, aws_env):
    bucket = new_bucket(aws_env)
    a = procs.start("node-a", "--log-store", f"s3://{bucket}/p", "--property", "role=runner")
    b = procs.start("node-b", "--log-store", f"s3://{bucket}/p")
    async with api_session() as http:
        await wait_ready(http, a)
        await wait_ready(http, b)
        job = {
            "name": "crash",
            "command": "echo before-the-crash; sleep 60",
            "target": {"selector": "role=runner"},
        }
        async with http.put(f"{a.url}{JOBS}/crash", json=job) as r:
            assert r.status == 201
        async with http.post(f"{a.url}{JOBS}/crash/runs", json={}) as r:
            run_id = (await r.json())["id"]

        async def writing():
            async with http.get(f"{a.url}{RUNS}/{run_id}/logs") as r:
                return r.status == 200 and "before-the-crash" in await r.text()

        await wait_for(writing, 20, what="the job writing")
        key = f"p/default/crash/{run_id}/1.log"
        segment = f"{key}.parts/00000000"
        await wait_for(lambda: get_object(aws_env, bucket, segment), 20, what="a segment")
        a.signal(signal.SIGKILL)
        await asyncio.to_thread(a.proc.wait, 10)
        assert get_object(aws_env, bucket, key) is None
        # the worker is gone: another node serves what it shipped while the job ran
        async with http.get(f"{b.url}{RUNS}/{run_id}/logs") as r:
            text = await r.text()
            assert r.status == 200, text
        assert "before-the-crash" in text and "shipped segments only" in text
        a = procs.restart(a)
        obj = await wait_for(lambda: get_object(aws_env, bucket, key), 30, what="leftover upload")
        lines = parsed(obj.decode())
        assert lines[0] == ("stdout", "before-the-crash")
        assert lines[-1][0] == "cronmesh" and "node stopped before" in lines[-1][1]


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_live_tail_from_any_of_three_nodes_then_the_stored_object(procs, aws_env):
    bucket = new_bucket(aws_env)
    store = ("--log-store", f"s3://{bucket}/live")
    a = procs.start("node-a", "--property", "role=runner", *store)
    b = procs.start("node-b", *store)
    c = procs.start("node-c", *store)
    n = 25
    async with api_session() as http:
        for node in (a, b, c):
            await wait_ready(http, node)
        job = {
            "name": "ticker",
            "command": f"for i in $(seq 1 {n}); do echo tick-$i; echo warn-$i >&2; sleep 0.2; done",
            "target": {"selector": "role=runner"},
        }
        async with http.put(f"{c.url}{JOBS}/ticker", json=job) as r:
            assert r.status == 201
        async with http.post(f"{c.url}{JOBS}/ticker/runs", json={}) as r:
            run_id = (await r.json())["id"]

        cli_task = asyncio.create_task(
            asyncio.to_thread(run_cli, b.url, "run", "logs", run_id, "--follow", timeout=90)
        )
        timeout = aiohttp.ClientTimeout(total=90)
        streamed = b""
        status_at_first_line = None
        async with http.get(f"{c.url}{RUNS}/{run_id}/logs?follow=1", timeout=timeout) as r:
            assert r.status == 200
            async for chunk in r.content.iter_any():
                streamed += chunk
                if status_at_first_line is None and b"tick-1\n" in streamed:
                    async with http.get(f"{c.url}{RUNS}/{run_id}") as rr:
                        status_at_first_line = (await rr.json())["status"]
                    # a plain read of the running attempt: what its spool holds now, whole or
                    # a byte range, on the node running it and through another
                    async with http.get(f"{a.url}{RUNS}/{run_id}/logs") as rr:
                        partial = await rr.read()
                    async with http.get(f"{c.url}{RUNS}/{run_id}/logs?offset=3&length=20") as rr:
                        partial_range = await rr.read()
        assert status_at_first_line == "running"  # it was live, not the finished object
        text = streamed.decode()
        assert stream_of(text, "stdout") == [f"tick-{i}" for i in range(1, n + 1)]
        assert stream_of(text, "stderr") == [f"warn-{i}" for i in range(1, n + 1)]

        code, out, err = await cli_task
        assert code == 0, err
        assert stream_of(out, "stdout") == [f"tick-{i}" for i in range(1, n + 1)]

        async def finished():
            async with http.get(f"{c.url}{RUNS}/{run_id}") as r:
                run = await r.json()
            return run if run["status"] in FINISHED else None

        run = await wait_for(finished, 20, what="run finished")
        assert run["node"] == "node-a" and run["status"] == "succeeded"
        key = f"live/default/ticker/{run_id}/1.log"
        obj = await wait_for(lambda: get_object(aws_env, bucket, key), 20, what="object")
        assert obj == streamed  # the live stream and the stored object are the same bytes
        assert b"tick-1\n" in partial and obj.startswith(partial)
        assert partial_range == obj[3:23]

        # after the run: any node serves it from the store, whole or as SSE
        async with http.get(f"{b.url}{RUNS}/{run_id}/logs") as r:
            assert r.status == 200 and await r.read() == obj
        headers = {"Accept": "text/event-stream"}
        async with http.get(
            f"{b.url}{RUNS}/{run_id}/logs?follow=1", headers=headers, timeout=timeout
        ) as r:
            assert r.headers["Content-Type"].startswith("text/event-stream")
            events = (await r.text()).strip().split("\n\n")
        assert events[-1] == "event: end\ndata: {}"
        data = [json.loads(e.removeprefix("data: ")) for e in events[:-1]]
        assert [d["text"] for d in data if d["stream"] == "stdout"][-1] == f"tick-{n}"


async def test_runs_beyond_retention_are_archived_as_json_lines_and_listable(cluster, aws_env):
    bucket = new_bucket(aws_env)
    node = await cluster.start(log_store=f"s3://{bucket}/arch")
    job = {"name": "kept", "command": "echo $CRONMESH_RUN_ID", "keep_runs": 2}
    ids = []
    for _ in range(5):
        ids.append(await trigger(cluster, job))
    for run_id in ids:
        assert (await finished_run(cluster, run_id))["status"] == "succeeded"
    scheduler = await wait_for(lambda: node.scheduler, 15, what="leader")
    await scheduler.retention.prune()
    status, body = await cluster.request("GET", f"{RUNS}?job=kept")
    assert sorted(r["id"] for r in body["runs"]) == sorted(ids)[3:]
    listing = s3_client(aws_env).list_objects_v2(Bucket=bucket, Prefix="arch/default/kept/runs/")
    keys = [o["Key"] for o in listing["Contents"]]
    old = sorted(ids)[:3]
    assert keys == [f"arch/default/kept/runs/{old[0]}-{old[-1]}.jsonl"]
    lines = get_object(aws_env, bucket, keys[0]).decode().splitlines()
    assert [json.loads(x)["id"] for x in lines] == old
    assert all(json.loads(x)["status"] == "succeeded" for x in lines)
    status, body = await cluster.request("GET", f"{RUNS}?archived=1&job=kept")
    assert status == 200 and [r["id"] for r in body["runs"]] == old[::-1]
    # a short log is in a pack of its project (D440)
    assert body["runs"][0]["attempts"][0]["log"].startswith(f"s3://{bucket}/arch/default/_packs/")
    status, body = await cluster.request("GET", f"{RUNS}?archived=1&limit=1")
    assert [r["id"] for r in body["runs"]] == [old[-1]]
    status, body = await cluster.request("GET", f"{RUNS}?archived=1&from=2099-01-01T00:00:00Z")
    assert status == 200 and body["runs"] == []
    status, body = await cluster.request("GET", f"{RUNS}?archived=1&from=yesterday")
    assert status == 400 and body["error"]["field"] == "from"
    status, body = await cluster.request("GET", f"{RUNS}?archived=1&to=9999-12-31T23:59:59-14:00")
    assert status == 400 and body["error"]["field"] == "to"  # past the ids' range
    # the logs of an archived run are still there (the job names the object, or the archived
    # record the pack member); read from the store, once this node's spools are gone
    spool = node.logs.spool
    await wait_for(lambda: not list(spool.root.rglob("*.spool")), 10, what="the spools removed")
    status, text = await cluster.request("GET", f"{RUNS}/{old[0]}/logs")
    assert status == 404
    status, text = await cluster.request("GET", f"{RUNS}/{old[0]}/logs?job=kept")
    assert status == 200 and stream_of(text, "stdout") == [old[0]]
