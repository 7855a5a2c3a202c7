"""Small logs packed per project (D440) with real `cronmesh node` processes, a real SeaweedFS and
real etcd: every stored read through another node, and a node killed before its pack was written
loses no line (its spools are uploaded as own objects when it starts again)."""

from __future__ import annotations

import asyncio
import signal

import pytest

from tests.chaos.harness import wait_ready
from tests.conftest import api_session, wait_for
from tests.integration.test_logs_s3 import (
    JOBS,
    PACK_POINTER,
    RUNS,
    aws_env,  # noqa: F401 (a fixture)
    new_bucket,
    parsed,
    s3_client,
    stored_log,
)

N = 12


async def _runs(http, node, job: str, command: str, n: int) -> list[str]:
    spec = {"name": job, "command": command, "target": {"selector": "role=runner"}}
    async with http.put(f"{node.url}{JOBS}/{job}", json=spec) as r:
        assert r.status in (200, 201), await r.text()
    ids = []
    for _ in range(n):
        async with http.post(f"{node.url}{JOBS}/{job}/runs", json={}) as r:
            assert r.status == 201, await r.text()
            ids.append((await r.json())["id"])
    return ids


async def _finished(http, node, run_id: str) -> dict:
    async def done():
        async with http.get(f"{node.url}{RUNS}/{run_id}") as r:
            run = await r.json()
            return run if run.get("status") == "succeeded" else None

    return await wait_for(done, 60, what=f"run {run_id} succeeded")


def _pack_keys(server, bucket: str, prefix: str) -> list[str]:
    listing = s3_client(server).list_objects_v2(Bucket=bucket, Prefix=prefix)
    return [o["Key"] for o in listing.get("Contents", [])]


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_packed_logs_read_through_any_node_exactly_as_own_objects_would(procs, aws_env):  # noqa: F811
    bucket = new_bucket(aws_env)
    store = ("--log-store", f"s3://{bucket}/pk")
    a = procs.start("node-a", "--property", "role=runner", *store)
    b = procs.start("node-b", *store)
    command = "echo first-$CRONMESH_RUN_ID; printf 'err\\n' >&2; printf 'no-newline'"
    async with api_session() as http:
        await wait_ready(http, a)
        await wait_ready(http, b)
        ids = await _runs(http, a, "short", command, N)
        runs = [await _finished(http, a, i) for i in ids]
        pointers = [r["attempts"][0]["log"] for r in runs]
        # packed, or (an attempt whose first segment the uploader began while it ran) its own
        own = {f"s3://{bucket}/pk/default/short/{i}/1.log" for i in ids}
        assert all(PACK_POINTER.fullmatch(p) or p in own for p in pointers), pointers
        assert any(PACK_POINTER.fullmatch(p) for p in pointers), pointers

        def all_stored():
            got = [stored_log(aws_env, bucket, p, p.split("/", 3)[-1]) for p in pointers]
            return got if all(got) else None

        stored = await wait_for(all_stored, 30, what="the packs written")
        packs = [k for k in _pack_keys(aws_env, bucket, "pk/") if k.endswith(".pack")]
        assert packs and len(packs) < N and all(k.startswith("pk/default/_packs/") for k in packs)
        for run_id, text in zip(ids, stored, strict=True):
            assert [s for s, _ in parsed(text.decode())] == ["stdout", "stderr", "stdout"]
            assert parsed(text.decode())[0] == ("stdout", f"first-{run_id}")
            # through the node that did not run it: from the store, by range
            async with http.get(f"{b.url}{RUNS}/{run_id}/logs") as r:
                assert r.status == 200 and (await r.read()) == text
                assert r.headers["X-Log-Size"] == str(len(text))
            async with http.get(f"{b.url}{RUNS}/{run_id}/logs?tail=1") as r:
                assert (await r.read()) == text.splitlines(keepends=True)[-1]
            async with http.get(f"{b.url}{RUNS}/{run_id}/logs?offset=3&length=10") as r:
                assert (await r.read()) == text[3:13]
            async with http.get(f"{b.url}{RUNS}/{run_id}/logs?offset=1000") as r:
                assert r.status == 200 and (await r.read()) == b""
            async with http.get(f"{b.url}{RUNS}/{run_id}/logs?format=json") as r:
                frames = (await r.json())["frames"]
                assert [f["text"] for f in frames] == [f"first-{run_id}", "err", "no-newline"]
            async with http.get(f"{b.url}{RUNS}/{run_id}/logs?follow=1") as r:
                assert (await r.read()) == text  # the attempt is over: the stored log, then end


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_a_node_killed_before_its_pack_is_written_loses_no_line(procs, aws_env, tmp_path):  # noqa: F811
    bucket = new_bucket(aws_env)
    cfg = tmp_path / "slow-packs.yaml"
    cfg.write_text("log_pack_window: 60\n")  # the pack stays open far longer than the test
    store = ("--log-store", f"s3://{bucket}/kp")
    a = procs.start("node-a", "--property", "role=runner", "--config", str(cfg), *store)
    b = procs.start("node-b", *store)
    lines = "for i in $(seq 1 40); do echo line-$i; done"
    async with api_session() as http:
        await wait_ready(http, a)
        await wait_ready(http, b)
        ids = await _runs(http, a, "many", lines, N)
        runs = [await _finished(http, a, i) for i in ids]
        packed = [r["id"] for r in runs if PACK_POINTER.fullmatch(r["attempts"][0]["log"])]
        assert packed, runs  # (one whose first segment was begun while it ran has its own)
        keys = _pack_keys(aws_env, bucket, "kp/")
        assert not [k for k in keys if k.endswith(".pack")]  # still open on node-a
        a.signal(signal.SIGKILL)
        await asyncio.to_thread(a.proc.wait, 10)
        a = procs.restart(a)  # its spools are uploaded, each as the attempt's own object
        await wait_ready(http, a)

        async def readable(run_id):
            async with http.get(f"{b.url}{RUNS}/{run_id}/logs") as r:
                return await r.text() if r.status == 200 else None

        for run_id in ids:
            text = await wait_for(lambda i=run_id: readable(i), 30, what=f"log of {run_id}")
            assert [body for _, body in parsed(text)] == [f"line-{i}" for i in range(1, 41)]
        # (a read may have been served from node-a's spool, its upload still on the way)
        alone = {f"kp/default/many/{i}/1.log" for i in packed}
        await wait_for(
            lambda: alone <= set(_pack_keys(aws_env, bucket, "kp/")), 30, what="uploaded alone"
        )
        for run_id in packed:
            got = stored_log(aws_env, bucket, None, f"kp/default/many/{run_id}/1.log")
            assert [body for _, body in parsed(got.decode())] == [f"line-{i}" for i in range(1, 41)]
