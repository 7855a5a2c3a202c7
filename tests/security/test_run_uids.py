"""Per-run uids (D205): a job without ``run_as`` runs as a uid of its own, from the node's
``run_uid_range``; two live runs never share one, and a uid comes back only after its run ended.
A node running as root here (as in CI), in-process, with a range of two uids."""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import subprocess

import pytest

from tests.conftest import api_session, wait_for
from tests.security.test_run_as import data_dir as data_dir_fixture
from tests.security.test_run_as import output, ready, run_job

data_dir = data_dir_fixture  # a data folder jobs of other users can traverse to their folder

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="per-run uids need root")

P = "/api/v1/projects/a"
FINISHED = ("succeeded", "failed", "timed_out", "cancelled", "lost")
RANGE = (60010, 60011)  # outside the default range other tests' nodes use


async def start_run(cluster, name: str, command: str) -> str:
    status, body = await cluster.request(
        "PUT", f"{P}/jobs/{name}", json={"name": name, "command": command}
    )
    assert status == 201, body
    status, run = await cluster.request("POST", f"{P}/jobs/{name}/runs", json={})
    assert status == 201, run
    return str(run["id"])


async def run_doc(cluster, run_id: str, *wanted: str) -> dict:
    async def check():
        status, doc = await cluster.request("GET", f"{P}/runs/{run_id}")
        return doc if status == 200 and doc["status"] in wanted else None

    return await wait_for(check, 30, what=f"run {run_id} {wanted}")


async def stdout(cluster, run_id: str, n: int) -> list[str]:
    async def lines():
        status, text = await cluster.request("GET", f"{P}/runs/{run_id}/logs")
        if status != 200:  # no log yet
            return None
        got = [ln.split(" ", 2)[-1] for ln in text.splitlines() if " stdout " in ln]
        return got if len(got) >= n else None

    return await wait_for(lines, 30, what=f"output of {run_id}")


async def test_each_run_has_its_own_uid_and_gets_it_back_only_after_it_ended(cluster):
    await cluster.start(
        run_as_default="dynamic", allow_root_jobs=False, run_uid_range=RANGE, capacity=4
    )
    probe = 'id -u; id -g; id -G; echo "home=$HOME pwd=$PWD"'
    first = await start_run(cluster, "first", f"{probe}; exec sleep 60")
    await run_doc(cluster, first, "running")
    second = await start_run(cluster, "second", f"{probe}; exec sleep 60")
    await run_doc(cluster, second, "running")
    uid1, gid1, groups1, where1 = await stdout(cluster, first, 4)
    uid2, _, _, _ = await stdout(cluster, second, 4)
    # a uid of its own, no passwd entry, gid = uid, no supplementary groups, HOME = its folder
    assert int(uid1) in range(RANGE[0], RANGE[1] + 1) and (gid1, groups1) == (uid1, uid1)
    home, pwd_ = where1.split(" ")
    assert home == f"home={pwd_[4:]}" and f"run-{first}-1" in pwd_, where1
    assert uid1 != uid2 and int(uid2) in range(RANGE[0], RANGE[1] + 1)

    # both uids are live: a third run fails, saying so, rather than share one
    third = await start_run(cluster, "third", "id -u")
    doc = await run_doc(cluster, third, *FINISHED)
    assert doc["status"] == "failed" and "every uid of run_uid_range" in doc["error"], doc

    # the first run ends: its uid is free again, and only that one
    status, body = await cluster.request("POST", f"{P}/runs/{first}/abort")
    assert status in (200, 202), body
    await run_doc(cluster, first, *FINISHED)
    again = await start_run(cluster, "again", "id -u; echo hi > f; cat f")
    assert await stdout(cluster, again, 2) == [uid1, "hi"]
    assert (await run_doc(cluster, again, *FINISHED))["status"] == "succeeded"
    await cluster.request("POST", f"{P}/runs/{second}/abort")
    await run_doc(cluster, second, *FINISHED)


async def test_a_uid_a_leftover_process_holds_is_not_handed_out(cluster):
    """A process an earlier node left behind (its reap missed it) still runs as a uid of the
    range: a restarted node must not give that uid to a new run, which could then read or
    signal the leftover."""
    lo, hi = 60020, 60021
    setpriv = shutil.which("setpriv") or "setpriv"
    as_lo = [setpriv, f"--reuid={lo}", f"--regid={lo}", "--clear-groups"]
    leftover = subprocess.Popen([*as_lo, "sleep", "60"])
    try:
        await wait_for(
            lambda: os.stat(f"/proc/{leftover.pid}").st_uid == lo, 10, what="leftover as uid"
        )
        await cluster.start(run_as_default="dynamic", allow_root_jobs=False, run_uid_range=(lo, hi))
        seen = []
        for name in ("one", "two"):  # the rotation wraps once: the scan still sees the leftover
            run_id = await start_run(cluster, name, "id -u")
            seen += await stdout(cluster, run_id, 1)
            assert (await run_doc(cluster, run_id, *FINISHED))["status"] == "succeeded"
        assert seen == [str(hi), str(hi)], seen
    finally:
        leftover.kill()
        leftover.wait()


async def test_a_cronmesh_node_with_its_defaults_runs_jobs_as_a_uid_of_their_own(procs, data_dir):
    """A real ``cronmesh node`` as root with the secure defaults (no run_as_default given):
    the job runs as a uid of the range that has no passwd entry, in its private folder, which
    is its HOME; it writes its result file and files in its folder; the node reads the result
    and removes the folder."""
    node = procs.start(
        "n1",
        "--data-dir",
        str(data_dir),
        env={"CRONMESH_ALLOW_ROOT_JOBS": "false", "CRONMESH_RUN_AS_DEFAULT": ""},
    )
    probe = (
        'id -u; id -G; echo "$HOME"; stat -c "%a %u" "$HOME"; touch "$HOME/scratch"; '
        'echo \'{"rows": 3}\' > "$CRONMESH_RESULT_FILE"'
    )
    async with api_session() as http:
        await wait_for(lambda: ready(http, node.url), 30, what="node ready")
        run = await run_job(http, node.url, "dyn", {"command": probe})
        assert run["status"] == "succeeded" and run["result"] == {"rows": 3}, run
        uid, groups, home, mode = await output(http, node.url, run["id"])
        assert 61184 <= int(uid) <= 65519 and groups == uid, (uid, groups)
        with pytest.raises(KeyError):
            pwd.getpwuid(int(uid))
        assert mode == f"700 {uid}" and home.endswith(f"run-{run['id']}-1"), (home, mode)
        assert not await asyncio.to_thread(os.path.exists, home)  # removed after the run
