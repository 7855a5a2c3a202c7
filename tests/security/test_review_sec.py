"""Findings of the second security review (review-sec): each attack as a stranger sent it, against
a real node where it needs one, and the pure check behind the fix with plain values."""

from __future__ import annotations

import json
import os
from datetime import timedelta

import aiohttp
import pytest

from cluster import identity
from cluster import store as store_module
from cluster import workflow_store as workflow_store_module
from cluster.audit import Retention, kind_of
from cluster.masking import mask_result
from cluster.models import JobSpec
from cluster.secretbox import new_key
from cluster.tokens import token_id
from nodes.api.ratelimit import LoginLimiter, address_key
from tests.conftest import api_headers, wait_for
from tests.security.test_audit_budget import count
from tests.security.test_login_limits import fwd, login, make_user
from tests.security.test_secrets import key_file

OLD_SECRET = "old-team-db-password-5b1e"
PW = "correct horse battery"

# -- the per-address login limit and IPv6 (D200) -------------------------------------------------


async def test_password_spray_from_fresh_ipv6_addresses_of_one_64_is_limited(cluster):
    """Attack: a client holds a whole IPv6 /64 (any rented host does) and sprays one password
    over many users, each guess from a fresh address of its /64. Counted per /128, every guess
    passed the per-address limit; counted per /64 the sixth is refused, while a client of
    another /64 behind the same proxy still logs in."""
    node = await cluster.start(trusted_proxies=["127.0.0.1/32"])
    node.access.limiter = LoginLimiter(per_user=100, per_address=5, window=300)
    await make_user(cluster, "alice")
    async with aiohttp.ClientSession() as anon:
        statuses = [
            (await login(anon, cluster, f"user{i}", "Summer2026!", **fwd(f"2001:db8:1:2::{i:x}")))[
                0
            ]
            for i in range(1, 9)
        ]
        assert statuses[:5] == [401] * 5
        assert statuses[5:] == [429] * 3, statuses
        # the IPv4-mapped spelling of an address is the same client as the address itself
        for i in range(5):
            status, _ = await login(anon, cluster, f"v{i}", "guess", **fwd("198.51.100.7"))
            assert status == 401
        status, _ = await login(anon, cluster, "alice", "guess", **fwd("::ffff:198.51.100.7"))
        assert status == 429
        status, body = await login(
            anon, cluster, "alice", "correct horse", **fwd("2001:db8:1:3::1")
        )
        assert status == 200, body


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("2001:db8:1:2::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
        ("2001:DB8:1:2::abcd", "2001:db8:1:2::/64"),
        ("[2001:db8:1:2::1]", "2001:db8:1:2::/64"),
        ("fe80::1%eth0", "fe80::/64"),
        ("::ffff:192.0.2.1", "192.0.2.1"),
        ("192.0.2.1", "192.0.2.1"),
        ("::1", "::/64"),
        ("unknown", "unknown"),
    ],
)
def test_address_key_counts_an_ipv6_client_by_its_64(address, key):
    assert address_key(address) == key


def test_a_limiter_counts_every_address_of_one_64_together():
    limiter = LoginLimiter(per_user=100, per_address=3, window=60)
    for i in range(3):
        assert not isinstance(limiter.reserve(f"u{i}", f"2001:db8::{i + 1}", 0.0), float)
    assert isinstance(limiter.reserve("u9", "2001:db8::ffff", 1.0), float)
    assert not isinstance(limiter.reserve("u9", "2001:db9::1", 1.0), float)


# -- a deleted project's secrets and runs (D201) -------------------------------------------------


async def test_a_new_project_of_a_deleted_ones_name_gets_none_of_its_secrets_or_runs(
    cluster, tmp_path
):
    """Attack: project ``pay`` is deleted (its team left); a cluster admin later creates ``pay``
    for another team. Its secrets, runs and logs had stayed in etcd: an editor of the new
    project listed them, read the old runs' output, and referenced the old team's database
    password from a job (``echo $PW | rev`` prints it past the masking)."""
    await cluster.start(secrets_key_file=key_file(tmp_path / "secrets.key", new_key()))
    r = cluster.request
    status, body = await r("POST", "/api/v1/projects", json={"name": "pay"})
    assert status == 201, body
    status, body = await r("PUT", "/api/v1/projects/pay/secrets/db", json={"value": OLD_SECRET})
    assert status == 201, body
    status, body = await r(
        "PUT",
        "/api/v1/projects/pay/jobs/j",
        json={"name": "j", "command": "echo old-team-output; sleep 60", "env": {}},
    )
    assert status == 201, body
    status, run = await r("POST", "/api/v1/projects/pay/jobs/j/runs", json={})
    assert status == 201, run

    async def printed() -> bool:
        s, text = await r("GET", f"/api/v1/projects/pay/runs/{run['id']}/logs")
        return s == 200 and "old-team-output" in text

    await wait_for(printed, 20, what="the old team's run printing")
    status, body = await r("DELETE", "/api/v1/projects/pay/jobs/j")
    assert status == 204, body
    # a run still going: the project cannot go yet (its run would be left without a project)
    status, body = await r("DELETE", "/api/v1/projects/pay")
    assert status == 409 and body["error"]["field"] == "project", body
    assert "run" in body["error"]["message"]
    status, body = await r("POST", f"/api/v1/projects/pay/runs/{run['id']}/abort")
    assert status in (200, 202), body

    async def finished() -> bool:
        s, got = await r("GET", f"/api/v1/projects/pay/runs/{run['id']}")
        return s == 200 and got.get("finished_at") is not None

    await wait_for(finished, 30, what="the aborted run finishing")
    status, body = await r("DELETE", "/api/v1/projects/pay")
    assert status == 204, body

    status, body = await r("POST", "/api/v1/projects", json={"name": "pay"})
    assert status == 201, body
    status, body = await r("GET", "/api/v1/projects/pay/secrets")
    assert status == 200 and body["secrets"] == [], body
    status, body = await r("GET", "/api/v1/projects/pay/runs")
    assert status == 200 and body["runs"] == [], body
    status, body = await r("GET", f"/api/v1/projects/pay/runs/{run['id']}")
    assert status == 404, body
    status, body = await r("GET", f"/api/v1/projects/pay/runs/{run['id']}/logs")
    assert status == 404, body
    status, body = await r(
        "PUT",
        "/api/v1/projects/pay/jobs/k",
        json={"name": "k", "command": "echo $PW | rev", "env": {"PW": {"secret": "db"}}},
    )
    assert status == 400 and body["error"]["field"] == "env.PW.secret", body


# -- the audit history and one's own credentials (D202) ------------------------------------------


async def test_a_viewer_churning_own_tokens_and_sessions_cannot_push_changes_out(cluster, etcd):
    """Attack: any user, a viewer of one project too, wipes the history of changes by writing
    accepted, audited requests that cost nothing: create and revoke their own API token in a
    loop (measured: ~270 entries/s from one client on the 2-core box, so the 100,000 kept
    changes were gone in ~6 minutes), or log in and out. The budget is scaled down to 30 here;
    those entries now go to a budget of their own and the admin's earlier change stays."""
    node = await cluster.start()
    node.access.audit.retention["changes"] = Retention(
        max_entries=30, max_age=timedelta(days=1), every=1
    )
    status, body = await cluster.request(
        "PUT", "/api/v1/projects/a/jobs/evidence", json={"name": "evidence", "command": "true"}
    )
    assert status == 201, body
    status, body = await cluster.request(
        "POST", "/api/v1/users", json={"name": "eve", "roles": {"a": "viewer"}, "password": PW}
    )
    assert status == 201, body
    # an admin acting on someone else's credentials is a change like any other
    status, body = await cluster.request("POST", "/api/v1/users/eve/tokens", json={})
    assert status == 201, body
    eve = api_headers(body["token"])
    base = cluster.url(None, "")
    async with aiohttp.ClientSession(headers=eve) as http:
        for _ in range(25):
            async with http.post(f"{base}/api/v1/users/eve/tokens", json={}) as r:
                assert r.status == 201, await r.text()
                token_id = (await r.json())["id"]
            async with http.delete(f"{base}/api/v1/users/eve/tokens/{token_id}") as r:
                assert r.status == 204
    async with aiohttp.ClientSession() as anon:
        for _ in range(5):
            status, body = await login(anon, cluster, "eve", PW)
            assert status == 200, body
            async with anon.post(
                f"{base}/api/v1/auth/logout", headers=api_headers(body["token"])
            ) as r:
                assert r.status in (200, 204), await r.text()
    status, body = await cluster.request("GET", "/api/v1/audit?kind=changes&limit=1000")
    assert status == 200, body
    paths = [e.get("path") for e in body["entries"]]
    assert "/api/v1/projects/a/jobs/evidence" in paths, paths
    assert "/api/v1/users/eve/tokens" in paths  # the admin's, kept with the changes
    assert not any(e.get("actor") == "eve" for e in body["entries"])
    status, body = await cluster.request("GET", "/api/v1/audit?kind=own&limit=1000&actor=eve")
    assert status == 200, body
    outcomes = [e.get("outcome") for e in body["entries"]]
    assert outcomes.count("login") == 5 and len(outcomes) == 5 + 5 + 50, outcomes
    # none left behind as an incomplete draft under the changes' prefix
    assert await count(cluster, etcd, "audit-own") == 60


@pytest.mark.parametrize(
    ("entry", "kind"),
    [
        ({"actor": "eve", "path": "/api/v1/users/eve/tokens", "outcome": "ok"}, "own"),
        ({"actor": "eve", "path": "/api/v1/users/eve/tokens/abc", "outcome": "ok"}, "own"),
        ({"actor": "eve", "path": "/api/v1/users/eve/password", "outcome": "ok"}, "own"),
        ({"actor": "eve", "path": "/api/v1/auth/logout", "outcome": "ok"}, "own"),
        ({"actor": "eve", "path": "/api/v1/auth/login", "outcome": "login"}, "own"),
        ({"actor": "root", "path": "/api/v1/users/eve/tokens", "outcome": "ok"}, "changes"),
        ({"actor": "eve", "path": "/api/v1/users/eve", "outcome": "ok"}, "changes"),
        ({"actor": "eve", "path": "/api/v1/users/evelyn/tokens", "outcome": "ok"}, "changes"),
        ({"actor": "eve", "path": "/api/v1/projects/a/jobs/j", "outcome": "ok"}, "changes"),
        ({"actor": "eve", "path": "/api/v1/users/eve/tokens", "outcome": "denied"}, "denied"),
        ({"actor": "eve", "path": "/x", "outcome": "login_failed"}, "denied"),
    ],
)
def test_own_credential_entries_have_their_own_budget(entry, kind):
    assert kind_of(entry) == kind


# -- login sessions per user (D203) --------------------------------------------------------------


async def test_logging_in_again_and_again_does_not_pile_up_sessions(cluster, etcd, monkeypatch):
    """Attack: any user with a password logs in in a loop (measured: ~5 logins/s from one
    sequential client, ~20/s with the hashing pool full). Each login stored a session record and
    an etcd lease for the session's lifetime (12 h), without limit: the token prefix — read whole
    by every token listing and creation — and etcd's leases grew by the million a day. Now a
    user holds at most ``MAX_SESSIONS_PER_USER`` (3 here) live sessions: a new login ends the
    oldest, its record and its lease."""
    monkeypatch.setattr(identity, "MAX_SESSIONS_PER_USER", 3)
    node = await cluster.start()
    status, body = await cluster.request(
        "POST", "/api/v1/users", json={"name": "eve", "roles": {"a": "viewer"}, "password": PW}
    )
    assert status == 201, body
    tokens, leases = [], []
    async with aiohttp.ClientSession() as anon:
        for _ in range(8):
            status, body = await login(anon, cluster, "eve", PW)
            assert status == 200, body
            tokens.append(body["token"])
            kv = await node.etcd.get(node.keys.token(token_id(body["token"])))
            assert kv is not None and kv.lease
            leases.append(kv.lease)
    store = node.access.store()
    sessions = [t for t in await store.list_tokens("eve") if t.kind == "session"]
    assert len(sessions) == 3, sessions
    async with aiohttp.ClientSession() as http:
        for i, token in enumerate(tokens):
            async with http.get(
                cluster.url(None, "/api/v1/auth/me"), headers=api_headers(token)
            ) as r:
                assert r.status == (200 if i >= 5 else 401), (i, r.status)
    remaining = [(await node.etcd.time_to_live(lease))[0] for lease in leases]
    assert all(ttl == -1 for ttl in remaining[:5]), remaining  # the ended sessions' leases
    assert all(ttl > 0 for ttl in remaining[5:]), remaining


# -- masking of a number in a result (D204) ------------------------------------------------------


@pytest.mark.parametrize(
    ("result", "shown"),
    [
        ({"pin": 4711}, {"pin": "***"}),
        ([1, 24711, 47110.5], [1, "2***", "***0.5"]),
        ({"ok": True, "n": 3}, {"ok": True, "n": 3}),
        ("pin 4711", "pin ***"),
    ],
)
def test_a_numeric_secret_returned_as_a_json_number_is_masked(result, shown):
    """Attack (accidental leak): a job returns its secret, a PIN, as a JSON number; masking
    looked only at strings, so the run's result showed it to every viewer."""
    assert mask_result(result, [b"4711"]) == shown


# -- odd input that answered 500 or broke every run --------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        # an `at` whose zone carries it past year 9999 or before year 1: stored, then the leader
        # ignored the job (or logged a traceback every 30 s for a workflow) and its ticks 500
        (
            "/api/v1/projects/a/jobs/j",
            {"name": "j", "command": "true", "schedules": [{"at": "9999-12-31T23:59:59-14:00"}]},
            "schedules.0.at",
        ),
        (
            "/api/v1/projects/a/workflows/w",
            {
                "name": "w",
                "tasks": [{"name": "t", "command": "true"}],
                "schedules": [{"at": "0001-01-01T00:00:00+14:00"}],
            },
            "schedules.0.at",
        ),
        # a NUL in a command or a parameter: stored, then every run failed at exec with a
        # traceback in the node's log
        ("/api/v1/projects/a/jobs/j", {"name": "j", "command": "true\u0000x"}, "command"),
        (
            "/api/v1/projects/a/jobs/j",
            {"name": "j", "command": "true", "parameters": {"p": "x\u0000"}},
            "parameters",
        ),
        (
            "/api/v1/projects/a/workflows/w",
            {"name": "w", "tasks": [{"name": "t", "command": "a\u0000"}]},
            "tasks.0.command",
        ),
    ],
)
async def test_odd_schedules_commands_and_parameters_are_a_400_naming_the_field(
    cluster, path, body, field
):
    await cluster.start()
    status, answer = await cluster.request("PUT", path, json=body)
    assert status == 400 and answer["error"]["field"] == field, answer
    status, answer = await cluster.request("GET", path)
    assert status == 404, answer  # nothing stored


async def test_odd_input_from_anyone_is_a_4xx_not_a_500(cluster):
    """A login with a lone surrogate as user name (anyone, no credentials) and a trigger with a
    NUL in a parameter (an operator) answered 500 / failed every run with a logged traceback."""
    await cluster.start()
    status, body = await cluster.request(
        "PUT", "/api/v1/projects/a/jobs/j", json={"name": "j", "command": "true"}
    )
    assert status == 201, body
    async with aiohttp.ClientSession() as anon:
        url = cluster.url(None, "/api/v1/auth/login")
        for name in ("\ud800", "a\u0000", "x" * 64 + "y"):
            raw = json.dumps({"username": name, "password": "guess"}).encode()
            headers = {"Content-Type": "application/json"}
            async with anon.post(url, data=raw, headers=headers) as r:
                assert r.status in (400, 401), (name, r.status, await r.text())
    status, body = await cluster.request(
        "POST", "/api/v1/projects/a/jobs/j/runs", json={"parameters": {"p": "x\u0000y"}}
    )
    assert status == 400 and body["error"]["field"] == "parameters", body
    status, body = await cluster.request(
        "GET",
        "/api/v1/projects/a/runs?from=2026-01-01T00:00:00Z&to=9999-12-31T23:59:59-14:00",
    )
    assert status == 400 and body["error"]["field"] == "to", body


# -- listing big runs (a viewer's request) -------------------------------------------------------


async def test_listing_runs_of_big_jobs_reads_and_answers_bounded_pages(cluster, monkeypatch):
    """Attack: a run record carries its job's document (a 240 KB job: a 420 KB run record). A
    viewer asked ``…/runs?limit=1000&status=failed``: one etcd read of 4,000 run records (1.7 GB
    built in etcd's memory, then refused by the client's cap, 503) or, under the cap, hundreds
    of MB held by the node. Now each read takes at most ``RUNS_PER_READ`` records and a page
    ends at ``RUNS_PAGE_BYTES`` with a cursor (scaled down here: 4 per read, ~1 MB a page);
    following the cursor lists every run once."""
    monkeypatch.setattr(store_module, "RUNS_PER_READ", 4, raising=False)
    monkeypatch.setattr(store_module, "RUNS_PAGE_BYTES", 1_000_000, raising=False)
    node = await cluster.start()
    big = {f"p{i}": "y" * 3000 for i in range(60)}
    status, body = await cluster.request(
        "PUT",
        "/api/v1/projects/a/jobs/big",
        json={"name": "big", "command": "false #" + "x" * 60000, "parameters": big},
    )
    assert status == 201, body
    ids = []
    for _ in range(7):
        status, run = await cluster.request("POST", "/api/v1/projects/a/jobs/big/runs", json={})
        assert status == 201, run
        ids.append(run["id"])

    async def all_failed() -> bool:
        for run_id in ids:
            s, got = await cluster.request("GET", f"/api/v1/projects/a/runs/{run_id}")
            if s != 200 or got["status"] != "failed":
                return False
        return True

    await wait_for(all_failed, 60, what="the big job's runs failing")
    reads: list[int] = []
    real_range = node.etcd.range

    async def counted(*args, **kw):
        res = await real_range(*args, **kw)
        reads.append(sum(len(kv.value) for kv in res.kvs))
        return res

    monkeypatch.setattr(node.etcd, "range", counted)
    for query in ("status=failed&limit=1000", "limit=1000", "job=big&limit=1000"):
        listed: list[str] = []
        before = ""
        while True:
            status, body = await cluster.request("GET", f"/api/v1/projects/a/runs?{query}{before}")
            assert status == 200, body
            assert len(body["runs"]) <= 3, (query, len(body["runs"]))  # 3 x 420 KB > 1 MB
            listed += [r["id"] for r in body["runs"]]
            if body["next"] is None:
                break
            before = f"&before={body['next']}"
        assert listed == sorted(ids, reverse=True), query
    assert reads and max(reads) <= 4 * 500_000, reads


async def test_listing_executions_of_a_big_workflow_reads_and_answers_bounded_pages(
    cluster, monkeypatch
):
    """Attack: an execution holds its workflow (up to 512 KiB) and its results; a viewer's
    ``…/executions?limit=1000`` was one etcd read of every record: past the client's message
    cap the list answered 503/422 with etcd's text for the whole project (the cap is 2 MiB here,
    so six 390 KB executions show it), below it the node held them all. Now ids are read first,
    records a few at a time (2 here), and a page ends at ~1 MB with a ``next`` cursor."""
    monkeypatch.setattr(workflow_store_module, "EXECUTIONS_PER_READ", 2, raising=False)
    monkeypatch.setattr(workflow_store_module, "EXECUTIONS_PAGE_BYTES", 1_000_000, raising=False)
    await cluster.start(etcd_max_message=2 * 1024 * 1024, etcd_page_keys=500)
    params = {f"p{i}": "x" * 3000 for i in range(64)}
    tasks = [{"name": f"t{k}", "external": True, "parameters": params} for k in range(2)]
    status, body = await cluster.request(
        "PUT", "/api/v1/projects/a/workflows/big", json={"name": "big", "tasks": tasks}
    )
    assert status == 201, body
    ids = []
    for _ in range(6):
        status, ex = await cluster.request(
            "POST", "/api/v1/projects/a/workflows/big/executions", json={}
        )
        assert status == 201, ex
        ids.append(ex["id"])
    for path in ("/api/v1/projects/a/executions", "/api/v1/projects/a/workflows/big/executions"):
        listed: list[str] = []
        before = ""
        while True:
            status, body = await cluster.request("GET", f"{path}?limit=1000{before}")
            assert status == 200, body
            assert len(body["executions"]) <= 4, (path, len(body["executions"]))
            listed += [e["id"] for e in body["executions"]]
            if body["next"] is None:
                break
            before = f"&before={body['next']}"
        assert listed == sorted(ids, reverse=True), path


# -- fixed (D205): a job reads another project's running job's environment ---------------------

# b's job, and a spy of project a that goes for it through /proc: its environment (b's secret,
# printed reversed past the masking), its working folder (through /proc/<pid>/cwd), a signal.
B_JOB = "echo hi > mine; exec sleep 30"
SPY = r"""
# b's run is "running" from its release; its process may still be between setpriv's change of
# user and its exec (not readable by that user then): look once b's command is its own
for i in $(seq 100); do
  for p in /proc/[0-9]*; do
    case "$(tr '\0' ' ' < $p/cmdline 2>/dev/null)" in "sleep 30 ") break 2;; esac
  done
  sleep 0.05
done
for f in /proc/[0-9]*/environ; do tr '\0' '\n' < $f 2>/dev/null; done | grep '^PW=' | rev
for p in /proc/[0-9]*; do
  case "$(tr '\0' ' ' < $p/cmdline 2>/dev/null)" in
    "sleep 30 ")
      pid=${p#/proc/}; echo "SAW $pid"
      ls -A $p/cwd/ 2>/dev/null | sed 's/^/LISTED /'
      kill -0 $pid 2>/dev/null && echo "SIGNALLED $pid";;
  esac
done
true
"""


async def spy_on_b(cluster, tmp_path, **node) -> str:
    """b's job runs with b's secret; a's spy runs next to it; returns the spy's log."""
    await cluster.start(secrets_key_file=key_file(tmp_path / "secrets.key", new_key()), **node)
    r = cluster.request
    status, body = await r("PUT", "/api/v1/projects/b/secrets/db", json={"value": OLD_SECRET})
    assert status == 201, body
    status, body = await r(
        "PUT",
        "/api/v1/projects/b/jobs/bj",
        json={"name": "bj", "command": B_JOB, "env": {"PW": {"secret": "db"}}},
    )
    assert status == 201, body
    status, b_run = await r("POST", "/api/v1/projects/b/jobs/bj/runs", json={})
    assert status == 201, b_run

    async def b_running() -> bool:
        s, got = await r("GET", f"/api/v1/projects/b/runs/{b_run['id']}")
        return s == 200 and got["status"] == "running"

    await wait_for(b_running, 20, what="b's job running")
    status, body = await r(
        "PUT", "/api/v1/projects/a/jobs/spy", json={"name": "spy", "command": SPY}
    )
    assert status == 201, body
    status, a_run = await r("POST", "/api/v1/projects/a/jobs/spy/runs", json={})
    assert status == 201, a_run

    async def a_done() -> bool:
        s, got = await r("GET", f"/api/v1/projects/a/runs/{a_run['id']}")
        return s == 200 and got.get("finished_at") is not None

    try:
        await wait_for(a_done, 30, what="a's job finishing")
        status, text = await r("GET", f"/api/v1/projects/a/runs/{a_run['id']}/logs")
        assert status == 200, text
        s, got = await r("GET", f"/api/v1/projects/b/runs/{b_run['id']}")
        assert got["status"] == "running", got  # b's job was there all along
        return str(text)
    finally:
        await r("POST", f"/api/v1/projects/b/runs/{b_run['id']}/abort")


@pytest.mark.skipif(os.geteuid() != 0, reason="per-run uids need a node running as root")
async def test_a_job_cannot_read_the_secrets_of_another_projects_running_job(cluster, tmp_path):
    """Attack: an editor of ``a`` runs a job that reads every ``/proc/<pid>/environ`` it can
    while ``b``'s job, which was given ``b``'s database password, runs on the same node; it
    prints the value reversed, past the masking, lists b's working folder and signals b's job.
    Each run has a uid of its own now (run_as_default dynamic, D205): all of it is refused."""
    text = await spy_on_b(cluster, tmp_path, run_as_default="dynamic", allow_root_jobs=False)
    assert "SAW " in text, text  # the spy found b's process (it may look, not touch)
    assert OLD_SECRET[::-1] not in text, text
    assert "LISTED" not in text and "SIGNALLED" not in text, text


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs a node running as root")
async def test_two_projects_sharing_a_named_default_user_still_see_each_other(cluster, tmp_path):
    """What remains (docs/security.md): jobs that run as one named user — ``run_as_default:
    nobody``, or two projects granted the same ``run_as`` user — share that user's rights over
    each other's processes. The spy of the test above gets everything then."""
    text = await spy_on_b(cluster, tmp_path, run_as_default="nobody", allow_root_jobs=False)
    assert OLD_SECRET[::-1] in text and "LISTED mine" in text and "SIGNALLED" in text, text


async def test_a_job_written_while_its_project_is_deleted_stops_the_deletion(
    cluster, tmp_path, monkeypatch
):
    """Race: an editor's job lands between the deletion's "no jobs" check and its transaction;
    the job must not be left in a project whose secrets were just deleted (D201): the deletion
    fails with 409 and deletes nothing."""
    node = await cluster.start(secrets_key_file=key_file(tmp_path / "secrets.key", new_key()))
    status, body = await cluster.request("POST", "/api/v1/projects", json={"name": "pay"})
    assert status == 201, body
    status, body = await cluster.request(
        "PUT", "/api/v1/projects/pay/secrets/db", json={"value": OLD_SECRET}
    )
    assert status == 201, body
    real_range = node.etcd.range
    late = {"name": "late", "command": "echo $PW", "env": {"PW": {"secret": "db"}}}

    async def racing(key, **kw):
        res = await real_range(key, **kw)
        if kw.get("count_only") and key == node.keys.actives("pay"):
            await node.store.put_job("pay", JobSpec.model_validate(late))  # the editor's write
        return res

    monkeypatch.setattr(node.etcd, "range", racing)
    status, body = await cluster.request("DELETE", "/api/v1/projects/pay")
    assert status == 409 and body["error"]["field"] == "project", body
    monkeypatch.setattr(node.etcd, "range", real_range)
    assert (await cluster.request("GET", "/api/v1/projects/pay"))[0] == 200
    status, body = await cluster.request("GET", "/api/v1/projects/pay/secrets")
    assert [s["name"] for s in body["secrets"]] == ["db"], body
    assert (await cluster.request("GET", "/api/v1/projects/pay/jobs/late"))[0] == 200
