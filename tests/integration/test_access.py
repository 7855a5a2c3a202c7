"""Identity and access against a real node and etcd: the authorization matrix (every endpoint x
every role x own/other project), tokens (expiry, revocation), disabled users, login with password
and cookie + CSRF, login rate limits, the audit log, and signed node-to-node requests."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest

from cluster.permissions import RANK
from nodes.api import signing
from nodes.api.app import make_app
from tests.conftest import TEST_ADMIN_TOKEN, api_headers, api_session, wait_for

OWN, OTHER = "own", "other"
JOB = {"name": "j", "command": "true"}
WF = {"name": "w", "tasks": [{"name": "a", "command": "true"}]}
CAL = {"dates": ["2026-12-24"]}
WIN = {"start": "2026-12-24T00:00:00Z", "end": "2026-12-25T00:00:00Z"}


def p(project: str, rest: str = "") -> str:
    return f"/api/v1/projects/{project}{rest}"


# (method, path template, body, who may: "public" | "auth" | "cluster" | "self" | role name)
# ``{p}`` is filled with the own or the other project; ``victim`` is a user that is not the caller.
ENDPOINTS: list[tuple[str, str, dict | None, str]] = [
    ("GET", "/healthz", None, "public"),
    ("GET", "/readyz", None, "public"),
    ("GET", "/status", None, "viewer"),  # viewer on "*" (or a metrics token)
    ("GET", "/metrics", None, "viewer"),
    ("GET", "/api/v1/auth/me", None, "auth"),
    ("GET", "/api/v1/nodes", None, "auth"),
    ("GET", "/api/v1/nodes/n1", None, "auth"),
    ("POST", "/api/v1/nodes/ghost/disable", None, "cluster"),
    ("DELETE", "/api/v1/nodes/ghost", None, "cluster"),
    ("GET", "/api/v1/groups", None, "auth"),
    ("PUT", "/api/v1/groups/g", {"name": "g"}, "cluster"),
    ("GET", "/api/v1/groups/g", None, "auth"),
    ("PUT", "/api/v1/groups/g/bindings/b", {"name": "b", "node": "n1"}, "cluster"),
    ("DELETE", "/api/v1/groups/g/bindings/absent", None, "cluster"),
    ("PUT", "/api/v1/groups/g/projects/granted", None, "cluster"),
    ("DELETE", "/api/v1/groups/g/projects/granted", None, "cluster"),
    ("GET", "{p}/targets", None, "viewer"),
    ("DELETE", "/api/v1/groups/absent", None, "cluster"),
    ("GET", "/api/v1/placement", None, "auth"),
    ("GET", "/api/v1/openapi.json", None, "public"),  # no data (D247)
    ("GET", "/api/v1/cron/preview", None, "auth"),
    ("GET", "/", None, "public"),
    ("GET", "/ui", None, "public"),
    ("GET", "/ui/index.html", None, "public"),
    ("GET", "{p}/notifications", None, "viewer"),
    ("PUT", "{p}/notifications", {"rules": []}, "editor"),
    ("DELETE", "{p}/notifications", None, "editor"),
    ("GET", "/api/v1/projects", None, "auth"),
    ("POST", "/api/v1/projects", {"name": "made-by-matrix"}, "cluster"),
    ("GET", "/api/v1/users", None, "cluster"),
    ("POST", "/api/v1/users", {"name": "made-by-matrix"}, "cluster"),
    ("GET", "/api/v1/users/victim", None, "self"),
    ("PATCH", "/api/v1/users/victim", {"display_name": "V"}, "cluster"),
    ("DELETE", "/api/v1/users/nobody", None, "cluster"),
    ("PUT", "/api/v1/users/victim/password", {"password": "long enough pw"}, "self"),
    ("GET", "/api/v1/users/victim/tokens", None, "self"),
    ("POST", "/api/v1/users/victim/tokens", {"description": "m"}, "self"),
    ("DELETE", "/api/v1/users/victim/tokens/0000000000000000", None, "self"),
    ("GET", "/api/v1/audit", None, "cluster"),
    ("POST", "/api/v1/audit/export", None, "cluster"),
    ("GET", "{p}", None, "viewer"),
    ("PUT", "{p}", {"description": "d"}, "cluster"),
    ("DELETE", "{p}", None, "cluster"),
    ("GET", "{p}/jobs", None, "viewer"),
    ("POST", "{p}/jobs", JOB, "editor"),
    ("GET", "{p}/jobs/j", None, "viewer"),
    ("PUT", "{p}/jobs/j", JOB, "editor"),
    ("PATCH", "{p}/jobs/j", {"description": "x"}, "editor"),
    ("DELETE", "{p}/jobs/absent", None, "editor"),
    ("POST", "{p}/jobs/j/runs", {}, "operator"),
    ("GET", "{p}/jobs/j/ticks", None, "viewer"),
    ("GET", "{p}/jobs/j/slots", None, "viewer"),
    (
        "POST",
        "{p}/jobs/j/backfill",
        {"from": "2025-01-01T00:00:00Z", "to": "2025-01-01T00:00:01Z"},
        "operator",
    ),
    ("GET", "{p}/runs", None, "viewer"),
    ("GET", "{p}/runs/1", None, "viewer"),
    ("POST", "{p}/runs/1/cancel", None, "operator"),
    ("POST", "{p}/runs/1/abort", None, "operator"),
    ("POST", "{p}/runs/1/rerun", None, "operator"),
    ("GET", "{p}/runs/1/logs", None, "viewer"),
    ("GET", "{p}/workflows", None, "viewer"),
    ("POST", "{p}/workflows", WF, "editor"),
    ("GET", "{p}/workflows/w", None, "viewer"),
    ("PUT", "{p}/workflows/w", WF, "editor"),
    ("DELETE", "{p}/workflows/absent", None, "editor"),
    ("POST", "{p}/workflows/w/executions", {}, "operator"),
    ("GET", "{p}/workflows/w/executions", None, "viewer"),
    ("GET", "{p}/workflows/w/slots", None, "viewer"),
    ("GET", "{p}/executions", None, "viewer"),
    ("POST", "{p}/executions/report/k", {"status": "succeeded"}, "operator"),
    ("GET", "{p}/executions/1", None, "viewer"),
    ("POST", "{p}/executions/1/rerun", {}, "operator"),
    ("POST", "{p}/executions/1/cancel", None, "operator"),
    ("GET", "/api/v1/settings/webhooks", None, "cluster"),
    ("PUT", "/api/v1/settings/webhooks", {"allow": []}, "cluster"),
    ("GET", "/api/v1/settings/run-limits", None, "cluster"),
    ("PUT", "/api/v1/settings/run-limits", {}, "cluster"),
    ("GET", "/api/v1/settings/scheduler-shards", None, "cluster"),
    ("PUT", "/api/v1/settings/scheduler-shards", {"shards": 1}, "cluster"),
    ("GET", "{p}/run-limits", None, "viewer"),
    ("PUT", "{p}/run-limits", {}, "cluster"),
    ("DELETE", "{p}/run-limits", None, "cluster"),
    ("GET", "{p}/secrets", None, "viewer"),
    ("GET", "{p}/secrets/absent", None, "viewer"),
    ("PUT", "{p}/secrets/s", {"value": "v"}, "editor"),
    ("DELETE", "{p}/secrets/absent", None, "editor"),
    ("POST", "/api/v1/secrets/rotate", None, "cluster"),
    # budgets (issue 24): any user reads them, a cluster admin writes them
    ("GET", "/api/v1/budgets", None, "auth"),
    ("GET", "/api/v1/budgets/absent", None, "auth"),
    ("PUT", "/api/v1/budgets/bud", {"concurrent": 1}, "cluster"),
    ("DELETE", "/api/v1/budgets/absent", None, "cluster"),
    # calendars, blackout windows, freeze, plan (issue 21)
    ("GET", "/api/v1/calendars", None, "auth"),
    ("GET", "/api/v1/calendars/absent", None, "auth"),
    ("PUT", "/api/v1/calendars/c", CAL, "cluster"),
    ("DELETE", "/api/v1/calendars/absent", None, "cluster"),
    ("GET", "/api/v1/blackouts", None, "auth"),
    ("GET", "/api/v1/blackouts/absent", None, "auth"),
    ("PUT", "/api/v1/blackouts/b", WIN, "cluster"),
    ("DELETE", "/api/v1/blackouts/absent", None, "cluster"),
    ("GET", "{p}/calendars", None, "viewer"),
    ("GET", "{p}/calendars/absent", None, "viewer"),
    ("PUT", "{p}/calendars/c", CAL, "editor"),
    ("DELETE", "{p}/calendars/absent", None, "editor"),
    ("GET", "{p}/blackouts", None, "viewer"),
    ("GET", "{p}/blackouts/absent", None, "viewer"),
    ("PUT", "{p}/blackouts/b", WIN, "editor"),
    ("DELETE", "{p}/blackouts/absent", None, "editor"),
    ("GET", "/api/v1/freeze", None, "auth"),
    ("PUT", "/api/v1/freeze", {"note": "matrix"}, "cluster"),
    ("DELETE", "/api/v1/freeze", None, "cluster"),
    ("GET", "/api/v1/plan", None, "auth"),
    ("GET", "{p}/hooks", None, "viewer"),
    ("GET", "{p}/hooks/absent", None, "viewer"),
    ("PUT", "{p}/hooks/h", {"target": {"job": "j"}}, "editor"),
    ("DELETE", "{p}/hooks/absent", None, "editor"),
]
# Not in the matrix on purpose: POST /api/v1/auth/login (public, tested below), POST
# /api/v1/auth/logout (ends the caller's session; tested below), /internal/v1/… (peers only),
# hook deliveries (public routes that authenticate with the hook's secret).
UNLISTED = {
    ("POST", "/api/v1/auth/login"),
    ("POST", "/api/v1/auth/logout"),
    ("GET", "/internal/v1/projects/{project}/runs/{run}/logs"),
    # hook deliveries: no user credentials, the hook's own (tests/security/test_hook_attacks.py)
    ("POST", "/api/v1/hooks/{project}/{hook}"),
    ("POST", "/register/{hook}"),
}


def canonical(template: str) -> str:
    out = template.replace("{p}", "/api/v1/projects/{project}")
    out = out.replace("/jobs/j", "/jobs/{job}").replace("/jobs/absent", "/jobs/{job}")
    out = out.replace("/runs/1", "/runs/{run}")
    out = out.replace("/workflows/w", "/workflows/{workflow}")
    out = out.replace("/workflows/absent", "/workflows/{workflow}")
    out = out.replace("/executions/report/k", "/executions/report/{key}")
    out = out.replace("/executions/1", "/executions/{execution}")
    out = out.replace("/nodes/n1", "/nodes/{node}").replace("/nodes/ghost", "/nodes/{node}")
    out = out.replace("/{node}/disable", "/{node}/{action}")
    out = out.replace("/groups/g/", "/groups/{group}/").replace("/groups/absent", "/groups/{group}")
    out = out.replace("/bindings/b", "/bindings/{binding}")
    out = out.replace("/bindings/absent", "/bindings/{binding}")
    out = out.replace("/groups/g", "/groups/{group}")
    out = out.replace("/projects/granted", "/projects/{project}")
    out = out.replace("/users/victim", "/users/{user}").replace("/users/nobody", "/users/{user}")
    out = out.replace("/ui/index.html", "/ui/{path}")
    out = out.replace("/budgets/absent", "/budgets/{budget}").replace(
        "/budgets/bud", "/budgets/{budget}"
    )
    out = out.replace("/hooks/absent", "/hooks/{hook}").replace("/hooks/h", "/hooks/{hook}")
    out = out.replace("/secrets/absent", "/secrets/{secret}").replace(
        "/secrets/s", "/secrets/{secret}"
    )
    for kind in ("calendars", "blackouts"):
        for name in ("absent", "c", "b"):
            out = out.replace(f"/{kind}/{name}", f"/{kind}/{{name}}")
    return out.replace("/tokens/0000000000000000", "/tokens/{token}")


async def make_user(cluster, name: str, roles: dict[str, str]) -> str:
    status, body = await cluster.request(
        "POST", "/api/v1/users", json={"name": name, "roles": roles}
    )
    assert status == 201, body
    status, body = await cluster.request("POST", f"/api/v1/users/{name}/tokens", json={})
    assert status == 201, body
    return body["token"]


async def call(cluster, method: str, path: str, token: str | None, **kw):
    url = cluster.url(None, path)
    async with aiohttp.ClientSession(headers=api_headers(token)) as http:
        async with http.request(method, url, **kw) as resp:
            return resp.status, await resp.text()


async def test_authorization_matrix(cluster):
    node = await cluster.start()
    for project in (OWN, OTHER):
        status, body = await cluster.request("PUT", p(project, "/jobs/j"), json=JOB)
        assert status == 201, body
    await make_user(cluster, "victim", {})
    principals: dict[str, tuple[str | None, dict[str, str]]] = {
        "anonymous": (None, {}),
        "cluster-admin": (TEST_ADMIN_TOKEN, {"*": "admin"}),
        "nothing": (await make_user(cluster, "nothing", {}), {}),
        "all-viewer": (await make_user(cluster, "all-viewer", {"*": "viewer"}), {"*": "viewer"}),
    }
    for role in ("viewer", "operator", "editor", "admin"):
        grants = {OWN: role}
        principals[role] = (await make_user(cluster, f"r-{role}", grants), grants)

    # every route the node serves is in the matrix (or deliberately left out of it)
    served = {
        (r.method, r.resource.canonical)
        for r in make_app(node).router.routes()
        if r.method != "HEAD" and r.resource is not None
    }
    covered = {(m, canonical(t)) for m, t, _, _ in ENDPOINTS} | UNLISTED
    assert served - covered == set(), "add these routes to the authorization matrix"

    def allowed(who: str, need: str, project: str | None) -> bool:
        _, grants = principals[who]
        if need == "public":
            return True
        if who == "anonymous":
            return False
        if need == "auth":
            return True
        if need in ("cluster", "self"):  # "victim" is never the caller here
            return grants.get("*") == "admin"
        best = max(RANK.get(grants.get("*", ""), -1), RANK.get(grants.get(project or "", ""), -1))
        return best >= RANK[need]

    failures = []
    for method, template, body, need in ENDPOINTS:
        projects = (OWN, OTHER) if "{p}" in template else (None,)
        for project in projects:
            path = template.replace("{p}", p(project)) if project else template
            # run as the weakest principal first, so the allowed calls change state last
            for who in (
                "anonymous",
                "nothing",
                "all-viewer",
                "viewer",
                "operator",
                "editor",
                "admin",
                "cluster-admin",
            ):
                token, _ = principals[who]
                status, text = await call(cluster, method, path, token, json=body)
                ok = allowed(who, need, project)
                if ok and status in (401, 403):
                    failures.append(f"{who} {method} {path}: {status}, expected allowed: {text}")
                if not ok:
                    want = 401 if who == "anonymous" else 403
                    if status != want:
                        failures.append(f"{who} {method} {path}: {status}, expected {want}")
    assert not failures, "\n".join(failures)


async def test_unknown_paths_fail_closed(cluster):
    await cluster.start()
    viewer = await make_user(cluster, "v", {"*": "viewer"})
    editor = await make_user(cluster, "e", {"*": "editor"})
    assert (await call(cluster, "GET", "/api/v1/somewhere-new", None))[0] == 401
    assert (await call(cluster, "GET", "/api/v1/somewhere-new", viewer))[0] == 403
    assert (await call(cluster, "POST", "/api/v1/groups/g", editor))[0] == 403
    # an admin reaches the router (404: no such route), nobody else gets that far
    assert (await call(cluster, "GET", "/api/v1/somewhere-new", TEST_ADMIN_TOKEN))[0] == 404
    # a user token never opens the peers' API
    status, _ = await call(cluster, "GET", "/internal/v1/projects/x/runs/1/logs", TEST_ADMIN_TOKEN)
    assert status == 403


async def test_encoded_slashes_cannot_reach_another_project(cluster):
    await cluster.start()
    viewer = await make_user(cluster, "v", {OWN: "viewer"})
    await cluster.request("PUT", p(OTHER, "/jobs/j"), json=JOB)
    for path in (
        "/api/v1/projects/own%2F..%2Fother/jobs",
        "/api/v1/projects/own%2Fx/jobs/j",
        "/api/v1/projects/own/../other/jobs",
    ):
        status, text = await call(cluster, "GET", path, viewer)
        assert status in (400, 403, 404), (path, status, text)
        assert '"j"' not in text


async def test_a_route_that_does_not_validate_names_is_still_confined(cluster):
    """A route added by another module, trusting match_info as is, behind the same middleware."""
    from aiohttp import web

    from nodes.api.access import ACCESS, access_middleware
    from nodes.api.http import errors_middleware
    from nodes.devtools.embedded import free_port

    node = await cluster.start()
    viewer = await make_user(cluster, "v", {OWN: "viewer"})

    async def echo(request: web.Request) -> web.Response:
        return web.json_response({"project": request.match_info["project"]})

    app = web.Application(middlewares=[errors_middleware, access_middleware])
    app[ACCESS] = node.access
    app.router.add_get("/api/v1/projects/{project}/echo", echo)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with aiohttp.ClientSession(headers=api_headers(viewer)) as http:
            base = f"http://127.0.0.1:{port}/api/v1/projects"
            async with http.get(f"{base}/own/echo") as r:
                assert r.status == 200 and (await r.json())["project"] == OWN
            async with http.get(f"{base}/other/echo") as r:
                assert r.status == 403
            async with http.get(f"{base}/own%2F..%2Fother/echo") as r:
                assert r.status in (403, 404), await r.text()
    finally:
        await runner.cleanup()


async def test_token_expiry_revocation_and_disabled_user(cluster):
    clock_skew = {"s": 0.0}
    node = await cluster.start()
    token = await make_user(cluster, "alice", {OWN: "editor"})
    assert (await call(cluster, "GET", p(OWN, "/jobs"), token))[0] == 200

    # revoke: the token fails at once
    status, body = await cluster.request("GET", "/api/v1/users/alice/tokens")
    assert status == 200 and len(body["tokens"]) == 1
    token_id = body["tokens"][0]["id"]
    assert "digest" not in body["tokens"][0] and "token" not in body["tokens"][0]
    status, _ = await cluster.request("DELETE", f"/api/v1/users/alice/tokens/{token_id}")
    assert status == 204
    assert (await call(cluster, "GET", p(OWN, "/jobs"), token))[0] == 401

    # expiry: a token past its expires_at fails (the node's clock is moved, not the test's)
    status, body = await cluster.request(
        "POST", "/api/v1/users/alice/tokens", json={"description": "short", "expires_in": 60}
    )
    assert status == 201, body
    short = body["token"]
    assert (await call(cluster, "GET", p(OWN, "/jobs"), short))[0] == 200
    store = node.access.store()
    real_clock = store.clock
    store.clock = lambda: real_clock() + timedelta(seconds=61 + clock_skew["s"])
    try:
        assert (await call(cluster, "GET", p(OWN, "/jobs"), short))[0] == 401
    finally:
        store.clock = real_clock
    # the token is bound to an etcd lease outliving it by a minute, so etcd drops it by itself
    kv = await node.etcd.get(node.keys.token(body["id"]))
    assert kv is not None and kv.lease != 0

    # a disabled user can do nothing, with any token
    status, body = await cluster.request("POST", "/api/v1/users/alice/tokens", json={})
    fresh = body["token"]
    status, _ = await cluster.request("PATCH", "/api/v1/users/alice", json={"enabled": False})
    assert status == 200
    for method, path in (("GET", p(OWN, "/jobs")), ("GET", "/api/v1/auth/me")):
        assert (await call(cluster, method, path, fresh))[0] == 401
    status, _ = await cluster.request("PATCH", "/api/v1/users/alice", json={"enabled": True})
    # re-enabling does not revive tokens issued before (issue 19 item 18, D167)
    assert (await call(cluster, "GET", "/api/v1/auth/me", fresh))[0] == 401

    # bad input names the field; the last admin cannot be removed
    status, body = await cluster.request(
        "POST", "/api/v1/users", json={"name": "x", "roles": {"own": "god"}}
    )
    assert status == 400 and body["error"]["field"].startswith("roles"), body
    status, body = await cluster.request("PATCH", "/api/v1/users/admin", json={"enabled": False})
    assert status == 409, body


async def test_login_cookie_csrf_and_rate_limit(cluster):
    await cluster.start()
    status, body = await cluster.request(
        "POST",
        "/api/v1/users",
        json={"name": "bob", "password": "correct horse", "roles": {OWN: "operator"}},
    )
    assert status == 201 and body["has_password"] and "password_hash" not in body, body

    jar = aiohttp.CookieJar(unsafe=True)  # the node is an IP address
    async with aiohttp.ClientSession(cookie_jar=jar) as anon:  # no credentials, own cookies
        url = cluster.url(None, "/api/v1/auth/login")
        async with anon.post(url, json={"username": "bob", "password": "wrong pass"}) as r:
            wrong_pw = (r.status, await r.json())
        async with anon.post(url, json={"username": "nobody", "password": "wrong pass"}) as r:
            no_user = (r.status, await r.json())
        assert wrong_pw[0] == no_user[0] == 401
        assert wrong_pw[1]["error"]["message"] == no_user[1]["error"]["message"]

        async with anon.post(url, json={"username": "bob", "password": "correct horse"}) as r:
            assert r.status == 200
            login = await r.json()
            cookie = r.cookies["cronmesh_session"]
            assert cookie["httponly"] and cookie["samesite"] == "Strict"
        assert datetime.fromisoformat(login["expires_at"]) > datetime.now(UTC)
        # the bearer token works
        status, text = await call(cluster, "GET", "/api/v1/auth/me", login["token"])
        assert status == 200 and '"bob"' in text
        # the cookie works for reads; changes need the CSRF header
        async with anon.get(cluster.url(None, p(OWN, "/jobs"))) as r:
            assert r.status == 200
        trigger = cluster.url(None, p(OWN, "/runs/1/cancel"))
        async with anon.post(trigger) as r:
            assert r.status == 403 and "CSRF" in (await r.text())
        async with anon.post(trigger, headers={"X-CSRF-Token": login["csrf_token"]}) as r:
            assert r.status == 404  # allowed through; there is no run 1
        # log out: the session token is revoked
        async with anon.post(
            cluster.url(None, "/api/v1/auth/logout"),
            headers={"X-CSRF-Token": login["csrf_token"]},
        ) as r:
            assert r.status == 204
        assert (await call(cluster, "GET", "/api/v1/auth/me", login["token"]))[0] == 401

        # per-user rate limit: after 10 failures even the right password is refused for a while
        for _ in range(10):
            async with anon.post(url, json={"username": "bob", "password": "nope nope"}) as r:
                assert r.status == 401
        async with anon.post(url, json={"username": "bob", "password": "correct horse"}) as r:
            assert r.status == 429 and 0 < int(r.headers["Retry-After"]) <= 300


async def test_audit_records_changes_with_before_and_after(cluster):
    await cluster.start()
    token = await make_user(cluster, "carol", {OWN: "editor"})
    async with aiohttp.ClientSession(headers=api_headers(token)) as http:
        async with http.put(
            cluster.url(None, p(OWN, "/jobs/audited")), json=JOB | {"name": "audited"}
        ) as r:
            assert r.status == 201
        async with http.patch(
            cluster.url(None, p(OWN, "/jobs/audited")), json={"command": "false"}
        ) as r:
            assert r.status == 200
        async with http.delete(cluster.url(None, p(OTHER, "/jobs/audited"))) as r:
            assert r.status == 403

    async def entries():
        status, body = await cluster.request("GET", "/api/v1/audit?actor=carol")
        assert status == 200
        return body["entries"] if len(body["entries"]) >= 3 else None

    found = await wait_for(entries, 10, what="audit entries")
    denied, patched, created = found[:3]  # newest first
    assert denied["outcome"] == "denied" and denied["status"] == 403
    assert patched["method"] == "PATCH" and patched["project"] == OWN
    change = next(c for c in patched["changes"] if c["key"].endswith("/jobs/own/audited"))
    assert change["before"]["command"] == "true" and change["after"]["command"] == "false"
    assert created["changes"][0]["before"] is None
    # an admin's user change is audited without secrets
    await cluster.request(
        "POST", "/api/v1/users", json={"name": "dan", "password": "secret pass 1"}
    )
    status, body = await cluster.request("GET", "/api/v1/audit?actor=admin&limit=5")
    user_entry = next(e for e in body["entries"] if e["path"] == "/api/v1/users")
    assert user_entry["changes"][0]["after"]["password_hash"] == "<redacted>"
    # non-admins cannot read it
    assert (await call(cluster, "GET", "/api/v1/audit", token))[0] == 403


async def test_audit_retention(etcd, keys):
    from cluster.audit import AuditLog, Retention
    from cluster.ids import Snowflake

    now = {"t": datetime(2026, 1, 1, tzinfo=UTC)}
    ids = Snowflake(1, clock=lambda: now["t"].timestamp())
    log = AuditLog(
        etcd,
        keys,
        ids,
        lambda: now["t"],
        Retention(max_entries=5, max_age=timedelta(days=1), every=1000),
    )
    for i in range(8):
        await log.record({"actor": "x", "n": i})
    assert await log.prune() == 3
    assert [e["n"] for e in await log.list()] == [7, 6, 5, 4, 3]
    now["t"] += timedelta(days=2)
    await log.record({"actor": "x", "n": 8})
    assert await log.prune() == 5
    assert [e["n"] for e in await log.list()] == [8]


async def test_audit_entry_is_written_with_the_change_it_records(etcd, keys):
    """A node dying between a change and its audit record leaves the entry, marked incomplete."""
    import json

    from cluster.audit import AuditLog, Changes
    from cluster.etcd import OBSERVER, Compare, Op
    from cluster.ids import Snowflake

    log = AuditLog(etcd, keys, Snowflake(2), lambda: datetime(2026, 1, 1, tzinfo=UTC))
    entry = {"actor": "eve", "method": "PUT", "path": "/x"}
    changes = Changes(draft=log.draft(entry))
    await etcd.put("/t/audited/b", "old")
    token = OBSERVER.set(changes)
    try:
        await etcd.put("/t/audited/a", "1")
        failed = await etcd.txn([Compare.absent("/t/audited/b")], [Op.put("/t/audited/b", "x")])
        await etcd.delete("/t/audited/b")
    finally:
        OBSERVER.reset(token)
    assert not failed.succeeded
    # the "crash": the request never recorded its entry, yet the last change carried it
    draft = json.loads((await etcd.get(changes.draft[0])).value)
    assert draft["outcome"] == "incomplete" and draft["actor"] == "eve"
    assert [c["key"] for c in draft["changes"]] == ["/t/audited/a", "/t/audited/b"]
    assert draft["changes"][1]["after"] is None
    assert [c["key"] for c in changes.items] == ["/t/audited/a", "/t/audited/b"]
    # the request's end completes the same entry with the values before
    await log.record({**entry, "outcome": "ok", "changes": changes.items}, changes.draft)
    (done,) = [e for e in await log.list() if e["actor"] == "eve"]
    assert done["id"] == draft["id"] and done["outcome"] == "ok"
    assert done["changes"][1]["before"] == "old"


async def test_peer_requests_are_signed_and_checked(cluster):
    node = await cluster.start()
    await wait_for(lambda: node.access.peer_secret is not None, 10, what="peer secret")
    secret = node.access.peer_secret
    path = "/internal/v1/projects/own/runs/1/logs?attempt=1&format=text"
    url = cluster.url(None, path)

    async def send(headers, body=b""):
        async with aiohttp.ClientSession() as http:
            async with http.get(url, headers=headers, data=body or None) as r:
                return r.status, await r.text()

    good = signing.sign(secret, "GET", path, b"", time.time(), "n9", to=node.node_id)
    assert (await send({}))[0] == 403  # unsigned
    status, text = await send(good)
    assert status == 404, text  # authentic: reaches the handler (no such log)
    status, text = await send(good)
    assert status == 403 and "replayed" in text
    tampered = signing.sign(
        secret,
        "GET",
        path.replace("attempt=1", "attempt=2"),
        b"",
        time.time(),
        "n9",
        to=node.node_id,
    )
    status, text = await send(tampered)
    assert status == 403 and "signature" in text
    old = signing.sign(secret, "GET", path, b"", time.time() - 120, "n9", to=node.node_id)
    status, text = await send(old)
    assert status == 403 and "window" in text
    wrong = signing.sign(
        b"another cluster's secret", "GET", path, b"", time.time(), "n9", to=node.node_id
    )
    assert (await send(wrong))[0] == 403


def read_text(path: Path) -> str:
    return path.read_text().strip()


async def test_first_admin_gets_a_generated_password_once(cluster):
    from structlog.testing import capture_logs

    with capture_logs() as logs:
        await cluster.start("a1", admin_token=None)
        await cluster.start("a2", admin_token=None)
    printed = [e for e in logs if e.get("password_file")]
    assert len(printed) == 1, printed  # only the node that won the bootstrap writes it
    password = read_text(Path(printed[0]["password_file"]))
    login = cluster.url(None, "/api/v1/auth/login")
    async with api_session() as http:
        async with http.post(login, json={"username": "admin", "password": password}) as r:
            assert r.status == 200
            token = (await r.json())["token"]
    # the generated password must be changed first (issue 19 item 20)
    new = {"password": "the admin's own", "current_password": password}
    assert (await call(cluster, "PUT", "/api/v1/users/admin/password", token, json=new))[0] == 204
    async with api_session() as http:
        async with http.post(login, json={"username": "admin", "password": new["password"]}) as r:
            assert r.status == 200
            token = (await r.json())["token"]
    status, text = await call(cluster, "GET", "/api/v1/users", token)
    assert status == 200 and "password_hash" not in text and "scrypt" not in text


@pytest.mark.parametrize("level", [0, 1])
async def test_log_proxy_between_nodes_at_each_security_level(cluster, level):
    a = await cluster.start("pa", security_level=level, properties={"side": "a"})
    b = await cluster.start("pb", security_level=level, properties={"side": "b"})
    job = {"name": "where", "command": "echo from-b", "target": {"selector": "side=b"}}
    status, body = await cluster.request("PUT", p(OWN, "/jobs/where"), json=job)
    assert status == 201, body
    status, run = await cluster.request("POST", p(OWN, "/jobs/where/runs"), json={})
    assert status == 201, run

    async def finished():
        s, r = await cluster.request("GET", p(OWN, f"/runs/{run['id']}"), node=a)
        return r if s == 200 and r["status"] == "succeeded" else None

    await wait_for(finished, 20, what="run on b")
    status, text = await cluster.request("GET", p(OWN, f"/runs/{run['id']}/logs"), node=a)
    assert status == 200 and "from-b" in text
    assert b.node_id == "pb"
    if level == 1:
        # b no longer trusts a's signature: the user is not told they lack rights (403) but
        # that a peer refused the call, naming it
        b.access.peer_secret = b"another cluster's secret"
        status, body = await cluster.request("GET", p(OWN, f"/runs/{run['id']}/logs"), node=a)
        assert status == 502, body
        assert body["error"]["code"] == "peer_rejected" and "node pb" in body["error"]["message"]


async def test_projects_crud_and_visibility(cluster):
    await cluster.start()
    status, body = await cluster.request(
        "POST", "/api/v1/projects", json={"name": "web", "description": "the site"}
    )
    assert status == 201, body
    status, body = await cluster.request("POST", "/api/v1/projects", json={"name": "web"})
    assert status == 409 and body["error"]["field"] == "name"
    status, body = await cluster.request("POST", "/api/v1/projects", json={"name": "Bad Name"})
    assert status == 400 and body["error"]["field"] == "name"
    await cluster.request("POST", "/api/v1/projects", json={"name": "api"})
    status, body = await cluster.request("GET", "/api/v1/projects/web")
    assert status == 200 and body["description"] == "the site"

    only_web = await make_user(cluster, "w", {"web": "viewer"})
    status, text = await call(cluster, "GET", "/api/v1/projects", only_web)
    assert status == 200 and '"web"' in text and '"api"' not in text
    status, body = await cluster.request("GET", "/api/v1/projects")
    assert {"web", "api"} <= set(body["projects"])

    # records created inside the project keep its document (a job, a workflow, an execution)
    assert (await cluster.request("PUT", p("web", "/jobs/j"), json=JOB))[0] == 201
    assert (await cluster.request("PUT", p("web", "/workflows/w"), json=WF))[0] == 201
    status, body = await cluster.request("POST", p("web", "/workflows/w/executions"), json={})
    assert status == 201, body
    status, body = await cluster.request("GET", "/api/v1/projects/web")
    assert status == 200 and body["description"] == "the site", body
    # a first job in a new project still creates the project
    assert (await cluster.request("PUT", p("fresh", "/jobs/j"), json=JOB))[0] == 201
    status, body = await cluster.request("GET", "/api/v1/projects/fresh")
    assert status == 200 and (body["name"], body["description"]) == ("fresh", ""), body
    assert body["usage"]["jobs"] == 1 and body["quota_overrides"] == {}, body
    assert body["run_as_users"] == [], body
    status, body = await cluster.request("DELETE", "/api/v1/projects/web")
    assert status == 409 and "job" in body["error"]["message"], body
    await cluster.request("DELETE", p("web", "/jobs/j"))
    status, body = await cluster.request("DELETE", "/api/v1/projects/web")
    assert status == 409 and "workflow" in body["error"]["message"], body
    await cluster.request("DELETE", p("web", "/workflows/w"))

    async def deleted() -> bool:  # 409 while the execution's task run is still going (D201)
        status, body = await cluster.request("DELETE", "/api/v1/projects/web")
        assert status in (204, 409), body
        return status == 204

    await wait_for(deleted, 30, what="the project deleted once its runs finished")
    assert (await cluster.request("GET", "/api/v1/projects/web"))[0] == 404


async def test_users_change_their_own_password(cluster):
    await cluster.start()
    status, _ = await cluster.request(
        "POST", "/api/v1/users", json={"name": "fay", "password": "first password"}
    )
    assert status == 201
    status, body = await cluster.request("POST", "/api/v1/users/fay/tokens", json={})
    token = body["token"]
    path = "/api/v1/users/fay/password"
    status, text = await call(cluster, "PUT", path, token, json={"password": "second password"})
    assert status == 400 and "current_password" in text
    status, text = await call(
        cluster,
        "PUT",
        path,
        token,
        json={"password": "second password", "current_password": "wrong password"},
    )
    assert status == 400 and "current_password" in text
    status, text = await call(
        cluster, "PUT", path, token, json={"password": "short", "current_password": "x"}
    )
    assert status == 400 and '"password"' in text
    status, _ = await call(
        cluster,
        "PUT",
        path,
        token,
        json={"password": "second password", "current_password": "first password"},
    )
    assert status == 204
    login = cluster.url(None, "/api/v1/auth/login")
    async with aiohttp.ClientSession() as anon:
        async with anon.post(login, json={"username": "fay", "password": "first password"}) as r:
            assert r.status == 401
        async with anon.post(login, json={"username": "fay", "password": "second password"}) as r:
            assert r.status == 200
    # nobody else's password, except as cluster admin
    status, _ = await call(
        cluster,
        "PUT",
        "/api/v1/users/admin/password",
        token,
        json={"password": "hijacked pass", "current_password": "second password"},
    )
    assert status == 403
