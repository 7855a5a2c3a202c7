"""A node without etcd answers one thing everywhere (issue #20, D214): 503, code
``not_connected`` — before its first session and after losing one, on a login as on any route.

A real node process and an etcd of the test's own, started late and killed midway.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from nodes.devtools.embedded import EtcdProcess, free_port
from tests.conftest import ProcessCluster, api_session, wait_for

LOGIN = "/api/v1/auth/login"
# one route behind each guard: the access layer's (authentication), the store's, the secrets',
# the placement's, the notifications', the project limits', the audit log's and the budgets'
GUARDED = (
    "/api/v1/projects/default/jobs",
    "/api/v1/projects/default/runs",
    "/api/v1/projects/default/secrets",
    "/api/v1/groups",
    "/api/v1/projects/default/notifications",
    "/api/v1/projects/default/run-limits",
    "/api/v1/settings/webhooks",
    "/api/v1/audit",
    "/api/v1/budgets",
)


async def answers(http, node) -> dict[str, tuple[int, str | None]]:
    out: dict[str, tuple[int, str | None]] = {}
    for path in GUARDED:
        async with http.get(node.url + path) as r:
            body = await r.json(content_type=None)
            out[path] = (r.status, (body.get("error") or {}).get("code"))
    login = {"username": "admin", "password": "whatever-it-is"}
    async with http.post(node.url + LOGIN, json=login, headers={"Authorization": ""}) as r:
        body = await r.json(content_type=None)
        out[LOGIN] = (r.status, (body.get("error") or {}).get("code"))
    return out


async def _status_is(http, url: str, code: int) -> bool:
    try:
        async with http.get(url) as r:
            return r.status == code
    except OSError:
        return False


async def test_every_route_and_the_login_answer_503_not_connected(tmp_path: Path, prefix: str):
    server = EtcdProcess(tmp_path / "etcd", client_port=free_port())
    cluster = ProcessCluster([server.endpoint], prefix, tmp_path)
    node = cluster.start("lonely")
    expected = {path: (503, "not_connected") for path in (*GUARDED, LOGIN)}
    try:
        async with api_session() as http:
            await wait_for(lambda: _status_is(http, f"{node.url}/healthz", 200), 30, what="healthz")
            # never connected
            assert await answers(http, node) == expected
            await asyncio.to_thread(server.start)
            await wait_for(lambda: _status_is(http, f"{node.url}/readyz", 200), 30, what="ready")
            assert (await answers(http, node))["/api/v1/projects/default/jobs"][0] == 200
            # connected once, then the session is lost
            server.kill()
            await wait_for(
                lambda: _status_is(http, f"{node.url}/readyz", 503), 30, what="not ready"
            )
            assert await answers(http, node) == expected
    finally:
        cluster.close()
        server.stop()
    problems = cluster.problems()
    assert not problems, problems
