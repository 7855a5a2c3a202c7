"""Notification rules that fire only on a change (issue 24 item 4, D259), end to end on a real
node: a job fails, fails, succeeds, succeeds, fails; a ``when: change`` rule is told three times
(first failure, first success after it, first failure after that), an ``always`` rule of every
failure; a bad ``when`` is refused naming the field."""

from __future__ import annotations

import json

from tests.api_helpers import JOBS, run_done
from tests.conftest import wait_for
from tests.integration.test_notifications import Receiver, allow_loopback


async def test_a_change_rule_is_told_of_changes_only(cluster, etcd, keys):
    await allow_loopback(etcd, keys)
    await cluster.start()
    async with Receiver() as change, Receiver() as always:
        job = {
            "name": "flip",
            "command": 'exit "$CRONMESH_PARAM_CODE"',
            "notifications": [
                {
                    "on": ["failure", "timeout", "lost", "success"],
                    "when": "change",
                    "webhook": {"url": change.url},
                },
                {"on": ["failure", "success"], "webhook": {"url": always.url}},
            ],
        }
        status, body = await cluster.request("POST", JOBS, json=job)
        assert status == 201, body
        runs = []
        for code in ("1", "1", "0", "0", "1"):  # one after the other: each has a "before"
            status, run = await cluster.request(
                "POST", f"{JOBS}/flip/runs", json={"parameters": {"code": code}}
            )
            assert status == 201, run
            done = await run_done(cluster, run["id"])
            assert done["status"] == ("succeeded" if code == "0" else "failed"), done
            runs.append(run["id"])

        # every run handled: the notifier's cursor is past the last run's outcome
        last = await etcd.get(keys.job_run("default", "flip", runs[-1]))
        assert last is not None

        async def all_handled():
            kv = await etcd.get(keys.notifier_cursor())
            return kv is not None and json.loads(kv.value)["revision"] >= last.mod_revision

        await wait_for(all_handled, 30, what="the notifier past the last run")
        told = [(p["run"]["id"], p["event"]) for _, p in change.delivered()]
        assert sorted(told) == sorted(
            [(runs[0], "failure"), (runs[2], "success"), (runs[4], "failure")]
        ), told
        every = [(p["run"]["id"], p["event"]) for _, p in always.delivered()]
        assert sorted(every) == sorted(
            [(runs[0], "failure"), (runs[1], "failure"), (runs[2], "success"),
             (runs[3], "success"), (runs[4], "failure")]
        ), every  # fmt: skip

    bad = {**job, "notifications": [{"on": ["failure"], "when": "sometimes", "email": {"to": ["a@b.co"]}}]}  # fmt: skip
    status, body = await cluster.request("PUT", f"{JOBS}/flip", json=bad)
    assert status == 400, body
    assert body["error"]["field"] == "notifications.0.when", body
    _, kept = await cluster.request("GET", f"{JOBS}/flip")
    assert kept["notifications"][0]["when"] == "change"  # nothing half-written
