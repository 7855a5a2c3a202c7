"""Findings of the second security review (review-sec): each attack as a stranger sent it, against
a real node where it needs one, and the pure check behind the fix with plain values."""

from __future__ import annotations

import aiohttp
import pytest

from cluster.secretbox import new_key
from nodes.ratelimit import LoginLimiter, address_key
from tests.conftest import wait_for
from tests.security.test_login_limits import fwd, login, make_user
from tests.security.test_secrets import key_file

OLD_SECRET = "old-team-db-password-5b1e"

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
