"""Issue 19, fuzzing pass: schemathesis sends generated requests (valid and invalid) to every
operation of the OpenAPI document of a real `cronmesh node` process, as each role — viewer,
operator, editor and admin of project ``a``, and admin of project ``b`` — asserting that no answer
is a server error, that no answer to one project's users holds the other project's data (a marker
string seeded into b's job, run, workflow, project and notification defaults, and another one into
a's), and that no answer to anyone holds a project secret's or a webhook secret's value.

Bounded: a few examples per operation and role (``EXAMPLES``), one shared HTTP session; about a
minute on the 2-core CI machine.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cluster.secretbox import new_key
from nodes.devtools.embedded import EtcdProcess
from tests.conftest import ProcessCluster, api_headers, wait_for

EXAMPLES = int(os.environ.get("CRONMESH_FUZZ_EXAMPLES", "10"))
MARK = {"a": "MARKER-a-6c1f0e9d", "b": "MARKER-b-93ab27c4"}
# the value of a project secret and of a webhook secret: no answer may hold them, to anyone
NEVER = {"a": "SEALED-a-0d4e71b2", "b": "SEALED-b-5f09c3aa"}
ROLES = [("viewer", "a"), ("operator", "a"), ("editor", "a"), ("admin", "a"), ("admin", "b")]


def seed_project(http: requests.Session, url: str, project: str) -> dict[str, list[str]]:
    """Jobs, a workflow, a run, defaults and the project record, each holding the marker."""
    mark = MARK[project]
    base = f"{url}/api/v1/projects/{project}"

    def ok(resp: requests.Response) -> Any:
        assert resp.status_code < 300, (resp.status_code, resp.text)
        return resp.json() if resp.content else None

    ok(http.post(f"{url}/api/v1/projects", json={"name": project, "description": mark}))
    job = {
        "name": f"j{project}",
        "command": f"echo {mark} $TOKEN",  # the log shows the marker, the secret masked
        "description": mark,
        "parameters": {"secret_thing": mark},
        "env": {"TOKEN": {"secret": "s"}},
        "notifications": [
            {"webhook": {"url": f"https://hooks.example.com/{mark}", "secret": NEVER[project]}}
        ],
    }
    ok(http.put(f"{base}/secrets/s", json={"value": NEVER[project]}))
    ok(http.put(f"{base}/jobs/j{project}", json=job))
    run = ok(http.post(f"{base}/jobs/j{project}/runs", json={"parameters": {"secret_thing": mark}}))
    wf = {"name": f"w{project}", "description": mark, "tasks": [{"name": "t", "command": mark}]}
    ok(http.put(f"{base}/workflows/w{project}", json=wf))
    ex = ok(http.post(f"{base}/workflows/w{project}/executions", json={}))
    rules = {"rules": [{"webhook": {"url": f"https://hooks.example.com/{mark}"}}]}
    ok(http.put(f"{base}/notifications", json=rules))
    return {
        "job": [f"j{project}"],
        "workflow": [f"w{project}"],
        "run": [run["id"]],
        "execution": [ex["id"]],
    }


def make_token(http: requests.Session, url: str, name: str, roles: dict[str, str]) -> str:
    resp = http.post(f"{url}/api/v1/users", json={"name": name, "roles": roles})
    assert resp.status_code == 201, resp.text
    resp = http.post(f"{url}/api/v1/users/{name}/tokens", json={})
    assert resp.status_code == 201, resp.text
    return str(resp.json()["token"])


@pytest.fixture(scope="module")
def seeded(
    etcd_server: EtcdProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    import aiohttp

    tmp = tmp_path_factory.mktemp("fuzzroles")
    c = ProcessCluster([etcd_server.endpoint], f"/fuzz{uuid.uuid4().hex[:10]}", Path(tmp))
    # a node configured as in production: with a secrets key (else secret routes answer 503)
    key = Path(tmp) / "secrets.key"
    key.write_text(new_key() + "\n")
    key.chmod(0o600)
    node = c.start("fuzz", "--secrets-key-file", str(key))
    try:

        async def ready() -> bool:
            async with (
                aiohttp.ClientSession(headers=api_headers()) as http,
                http.get(f"{node.url}/readyz") as resp,
            ):
                return resp.status == 200

        asyncio.run(wait_for(ready, 30, what="node ready"))
        http = requests.Session()
        http.headers.update(api_headers())
        known: dict[str, list[str]] = {}
        for project in ("a", "b"):
            for k, v in seed_project(http, node.url, project).items():
                known.setdefault(k, []).extend(v)
        tokens = {
            (role, project): make_token(http, node.url, f"{role}-{project}", {project: role})
            for role, project in ROLES
        }
        yield {"url": node.url, "tokens": tokens, "known": known, "cluster": c}
    finally:
        c.close()


@pytest.mark.timeout(300)
def test_every_role_every_operation_no_5xx_no_other_projects_data(seeded: dict[str, Any]) -> None:
    url = seeded["url"]
    schema = schemathesis.openapi.from_url(f"{url}/api/v1/openapi.json", headers=api_headers())
    # logout revokes the token it is called with: every later request would be a 401
    operations = [
        op
        for op in (result.ok() for result in schema.get_all_operations())
        if (op.method.upper(), op.path) != ("POST", "/api/v1/auth/logout")
    ]
    assert len(operations) >= 40
    known: dict[str, list[str]] = seeded["known"]
    http = requests.Session()
    failures: list[str] = []
    calls = [0]
    own_hits: dict[str, int] = {}
    started = time.monotonic()

    def fuzz_one(strategy: Any, who: str, token: str, mine: str, other: str) -> Any:
        @given(case=strategy)
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def fuzz(case: Any) -> None:
            response = case.call(base_url=url, session=http, headers=api_headers(token), timeout=30)
            calls[0] += 1
            where = f"{who} {case.method} {case.formatted_path}"
            if response.status_code >= 500 and response.status_code != 503:
                failures.append(f"{where}: {response.status_code} {response.text[:200]}")
            if other in response.text:
                failures.append(f"{where}: answer holds the other project's marker")
            if NEVER["a"] in response.text or NEVER["b"] in response.text:
                failures.append(f"{where}: answer holds a secret's value")
            if mine in response.text:
                own_hits[who] = own_hits.get(who, 0) + 1

        return fuzz

    for role, own in ROLES:
        token = seeded["tokens"][(role, own)]
        other = MARK["b" if own == "a" else "a"]
        for op in operations:
            names = [p.name for p in op.path_parameters]

            def steer(pair: tuple[Any, int], names: list[str] = names) -> Any:
                """Point generated paths at the seeded objects half the time, at either
                project (own and other) so cross-project requests are tried too."""
                case, pick = pair
                for i, name in enumerate(names):
                    if name == "project":
                        case.path_parameters[name] = ("a", "b")[(pick >> i) & 1]
                    elif name in known and (pick >> (i + 4)) & 1:
                        values = known[name]
                        case.path_parameters[name] = values[(pick >> 8) % len(values)]
                return case

            strategy = st.tuples(op.as_strategy(), st.integers(0, 1023)).map(steer)

            fuzz_one(strategy, f"{role}@{own}", token, MARK[own], other)()
    elapsed = time.monotonic() - started
    print(
        f"fuzzed {calls[0]} requests in {elapsed:.1f} s over {len(operations)} operations; "
        f"answers with the caller's own marker: {own_hits}"
    )
    assert calls[0] >= len(operations) * len(ROLES)
    assert not failures, "\n".join(failures[:40])
    # the check can fail: every role did read its own project's marker somewhere
    assert set(own_hits) == {f"{role}@{own}" for role, own in ROLES}, own_hits
