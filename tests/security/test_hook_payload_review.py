"""Review of the hooks branch (D284, D285): what a signed delivery's payload can do. A sender
that holds the secret is still only a sender of events (GitHub relays text that strangers wrote):
its payload must not crash the handler, nor set a parameter the target does not declare — what a
trigger by an operator cannot do either. Real etcd, real node."""

from __future__ import annotations

import json

from cluster.hooks import MAX_VALUE_DEPTH
from tests.security.test_hook_attacks import SECRET_A, post, runs, signed, start


async def _hook(cluster, job: dict, mapping: dict[str, str]) -> None:
    status, body = await cluster.request("POST", "/api/v1/projects/a/jobs", json=job)
    assert status == 201, body
    hook = {
        "target": {"job": job["name"]},
        "secret": SECRET_A,
        "parameters": mapping,
        "rate_per_minute": 6000,
        "burst": 1000,
    }
    status, body = await cluster.request("PUT", "/api/v1/projects/a/hooks/h", json=hook)
    assert status == 201, body


async def test_deeply_nested_payload_value_is_a_400_not_a_500(cluster, tmp_path):
    """A value nested deeper than MAX_VALUE_DEPTH at a mapped path is a 400 naming the payload
    path (it was a run whose parameter was 900 brackets, serialised by a recursive json.dumps
    that only the stack depth kept from a RecursionError); near the parser's own limit, a 400
    too, never a 500; no run either way."""
    await start(cluster, tmp_path)
    await _hook(cluster, {"name": "j", "command": "true"}, {"ref": "a"})
    for depth in [MAX_VALUE_DEPTH + 1, *range(940, 1000)]:
        raw = ('{"a": ' + "[" * depth + "]" * depth + "}").encode()
        status, body, _ = await post(cluster, "/api/v1/hooks/a/h", raw, signed(SECRET_A, raw))
        assert status == 400, (depth, status, body)
        if depth == MAX_VALUE_DEPTH + 1:
            assert json.loads(body)["error"]["field"] == "payload.a"
    assert await runs(cluster, "a") == []
    ok = json.dumps({"a": [[1, 2], {"b": None}]}).encode()
    status, body, _ = await post(cluster, "/api/v1/hooks/a/h", ok, signed(SECRET_A, ok))
    assert status == 202, body
    (run,) = await runs(cluster, "a")
    assert run["parameters"]["ref"] == '[[1,2],{"b":null}]'


async def test_a_hook_cannot_set_an_undeclared_parameter(cluster, tmp_path):
    """A job that declares its parameters refuses a trigger naming another (D254); a hook
    mapping one (mapped before the job's declarations changed, or by mistake) was let through.
    Now refused alike: 400 naming parameters.<name>, no run; a declared one still goes."""
    await start(cluster, tmp_path)
    job = {"name": "j", "command": "true", "parameters": {"ref": "main"}}
    await _hook(cluster, job, {"ref": "ref", "extra": "x"})
    raw = json.dumps({"ref": "dev", "x": "injected"}).encode()
    status, body, _ = await post(cluster, "/api/v1/hooks/a/h", raw, signed(SECRET_A, raw))
    assert status == 400, body
    assert json.loads(body)["error"]["field"] == "parameters.extra"
    assert await runs(cluster, "a") == []
    raw = json.dumps({"ref": "dev"}).encode()  # "x" absent: only the declared one is set
    status, body, _ = await post(cluster, "/api/v1/hooks/a/h", raw, signed(SECRET_A, raw))
    assert status == 202, body
    (run,) = await runs(cluster, "a")
    assert run["parameters"] == {"ref": "dev"}


async def test_replayed_deliveries_do_not_flood_the_history_of_changes(cluster, tmp_path):
    """A holder of a hook's secret replays one keyed delivery: it starts nothing, passes no
    run gate, and each replay was an entry among the changes (100 000 of them push 90 days of
    changes out). Now the first delivery is a change; its replays are merged into one entry
    in the refusals' budget, with their count (D284)."""
    node = await start(cluster, tmp_path)
    await _hook(cluster, {"name": "j", "command": "true"}, {})
    raw = b'{"event": "push"}'
    headers = {**signed(SECRET_A, raw), "Idempotency-Key": "evt-1"}
    runs_seen = set()
    for _ in range(40):
        status, body, _ = await post(cluster, "/api/v1/hooks/a/h", raw, headers)
        assert status == 202, body
        runs_seen.add(json.loads(body)["run"])
    assert len(runs_seen) == 1
    await node.access.flush_denials(float("inf"))
    status, body = await cluster.request("GET", "/api/v1/audit?kind=changes&limit=200")
    assert status == 200, body
    hook_changes = [e for e in body["entries"] if e.get("actor") == "hook:h"]
    assert len(hook_changes) == 1 and hook_changes[0]["replayed"] is False, hook_changes
    status, body = await cluster.request("GET", "/api/v1/audit?kind=denied&limit=200")
    replays = [e for e in body["entries"] if e.get("outcome") == "hook_replayed"]
    assert len(replays) == 1 and replays[0]["count"] == 39, replays
    assert replays[0]["run"] in runs_seen
