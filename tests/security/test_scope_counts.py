"""Caps on how many of a thing a scope holds (D500): a project's calendars and blackout windows
(100 each), hooks (200) and secrets (1000), a user's API tokens (100). Each was counted, then
written with a compare on its own key only, so a burst of concurrent creations all passed one
count: the secaudit round stored 377 calendars and 599 hooks of one project, and a viewer held 389
API tokens, each with a single burst of requests. Now the write also compares that nothing was
created in the scope since the count; a creation that loses retries, counts again and is
refused at the cap. Real etcd, real node, the bursts sent over HTTP as the attacker would."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime

import aiohttp

from cluster.blackouts import WindowSpec
from cluster.calendar_store import MAX_PER_SCOPE, CalendarStore
from cluster.calendars import CalendarSpec
from cluster.etcd import Op
from cluster.hooks import MAX_HOOKS_PER_PROJECT
from cluster.identity import MAX_TOKENS_PER_USER, IdentityStore
from cluster.secret_store import MAX_SECRETS_PER_PROJECT
from cluster.secretbox import new_key
from tests.conftest import api_headers
from tests.integration.test_access import make_user

BURST = 30  # concurrent creations, each of a new name
SHORT = 3  # the scope holds its cap less this many when the burst starts


async def burst(cluster, token: str, requests: list[tuple[str, dict]]) -> Counter[int]:
    async with aiohttp.ClientSession(headers=api_headers(token)) as http:

        async def one(path: str, body: dict) -> int:
            method = "POST" if path.endswith("/tokens") else "PUT"
            async with http.request(method, cluster.url(None, path), json=body) as resp:
                await resp.read()
                return resp.status

        return Counter(await asyncio.gather(*(one(p, b) for p, b in requests)))


async def fill(etcd, prefix: str, count: int) -> None:
    """``count`` records under ``prefix`` (only their number matters to the cap)."""
    for start in range(0, count, 100):
        ops = [Op.put(f"{prefix}fill{i:05d}", "{}") for i in range(start, min(start + 100, count))]
        await etcd.txn([], ops)


async def count(etcd, prefix: str) -> int:
    return (await etcd.range(prefix, count_only=True)).count


async def test_a_burst_of_creations_cannot_pass_a_projects_caps(cluster, etcd, keys, tmp_path):
    key = tmp_path / "secrets.key"
    key.write_text(new_key() + "\n")
    key.chmod(0o600)
    await cluster.start(secrets_key_file=str(key))
    editor = await make_user(cluster, "ed", {"a": "editor"})
    status, body = await cluster.request(
        "PUT", "/api/v1/projects/a/jobs/j", json={"name": "j", "command": "true"}
    )
    assert status == 201, body
    # calendars and windows are read by the leader: fill them with real documents
    store = CalendarStore(etcd, keys, lambda: datetime.now(UTC))
    for i in range(MAX_PER_SCOPE - SHORT):
        await store.put_calendar("a", CalendarSpec(name=f"f{i}", dates=["2027-01-01"]))
        window = WindowSpec(name=f"f{i}", start="2027-01-01T00:00:00Z", end="2027-01-02T00:00:00Z")
        await store.put_window("a", window)
    await fill(etcd, keys.hooks("a"), MAX_HOOKS_PER_PROJECT - SHORT)
    await fill(etcd, keys.secrets("a"), MAX_SECRETS_PER_PROJECT - SHORT)
    base = "/api/v1/projects/a"
    kinds = {
        "calendars": (
            keys.calendars("a"),
            MAX_PER_SCOPE,
            lambda n: {"name": n, "dates": ["2027-01-01"]},
        ),
        "blackouts": (
            keys.blackouts("a"),
            MAX_PER_SCOPE,
            lambda n: {"name": n, "start": "2027-01-01T00:00:00Z", "end": "2027-01-02T00:00:00Z"},
        ),
        "hooks": (keys.hooks("a"), MAX_HOOKS_PER_PROJECT, lambda n: {"target": {"job": "j"}}),
        "secrets": (keys.secrets("a"), MAX_SECRETS_PER_PROJECT, lambda n: {"value": "v"}),
    }
    held = {}
    for kind, (prefix, cap, body) in kinds.items():
        answers = await burst(
            cluster, editor, [(f"{base}/{kind}/x{i}", body(f"x{i}")) for i in range(BURST)]
        )
        assert set(answers) <= {201, 403, 409}, (kind, answers)  # refused: never a 500
        held[kind] = (await count(etcd, prefix), cap, answers[201])
    assert all(n == cap for n, cap, _ in held.values()), held


async def test_a_burst_of_token_creations_cannot_pass_a_users_cap(cluster, etcd, keys):
    await cluster.start()
    viewer = await make_user(cluster, "v", {"a": "viewer"})  # holds one token already
    identity = IdentityStore(etcd, keys, lambda: datetime.now(UTC))
    for _ in range(MAX_TOKENS_PER_USER - SHORT - 1):
        await identity.create_token("v")
    requests = [("/api/v1/users/v/tokens", {"description": f"t{i}"}) for i in range(BURST)]
    answers = await burst(cluster, viewer, requests)
    assert set(answers) <= {201, 409}, answers
    assert answers[201] <= SHORT, answers
    assert len(await identity.list_tokens("v")) == MAX_TOKENS_PER_USER, answers
