"""A replayed delivery (a known ``Idempotency-Key``) answers what the first delivery was answered,
said to be a replay (D321): 202 on a hook's path, 200 on the seed's ``POST /register/…``, each
time with the first delivery's run or execution, ``"replayed": true`` and the header
``Idempotent-Replayed: true``; nothing new is started."""

from __future__ import annotations

from tests.integration.test_hook_deliveries import SECRET, P, deliver, start


async def test_a_replay_answers_the_first_deliverys_status_and_says_so(cluster, tmp_path):
    await start(cluster, tmp_path)
    assert (await cluster.request("POST", f"{P}/jobs", json={"name": "j", "command": "true"}))[
        0
    ] == 201
    hook = {"target": {"job": "j"}, "secret": SECRET}
    assert (await cluster.request("PUT", f"{P}/hooks/h", json=hook))[0] == 201
    key = {"Idempotency-Key": "evt-7"}
    first = await deliver(cluster, "/api/v1/hooks/default/h", {"a": 1}, headers=key)
    again = await deliver(cluster, "/api/v1/hooks/default/h", {"a": 1}, headers=key)
    assert first[0] == again[0] == 202, (first, again)
    assert first[1]["replayed"] is False and "Idempotent-Replayed" not in first[2]
    assert again[1]["replayed"] is True and again[2]["Idempotent-Replayed"] == "true"
    assert again[1]["run"] == first[1]["run"]
    _, runs = await cluster.request("GET", f"{P}/runs?job=j")
    assert [r["id"] for r in runs["runs"]] == [first[1]["run"]]

    wf = {"name": "flow", "tasks": [{"name": "a", "command": "true"}]}
    assert (await cluster.request("PUT", f"{P}/workflows/flow", json=wf))[0] in (200, 201)
    doc = {"target": {"workflow": "flow"}, "auth": "token", "secret": SECRET}
    assert (await cluster.request("PUT", f"{P}/hooks/flow", json=doc))[0] == 201
    bearer = {"Authorization": f"Bearer {SECRET}", **key}
    first = await deliver(cluster, "/register/flow", {}, secret=None, headers=bearer)
    again = await deliver(cluster, "/register/flow", {}, secret=None, headers=bearer)
    assert first[0] == again[0] == 200, (first, again)
    assert first[1]["replayed"] is False and "Idempotent-Replayed" not in first[2]
    assert again[1]["replayed"] is True and again[2]["Idempotent-Replayed"] == "true"
    assert again[1]["execution"] == first[1]["execution"]
    _, execs = await cluster.request("GET", f"{P}/executions?workflow=flow")
    assert [e["id"] for e in execs["executions"]] == [first[1]["execution"]]
