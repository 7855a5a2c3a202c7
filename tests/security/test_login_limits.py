"""Issue 19 item 3: login limits that hold under concurrency, bounded password hashing, and the
client address behind a trusted proxy (D165)."""

from __future__ import annotations

import asyncio
import time

import aiohttp

from nodes.proxy import client_address, forwarded_tls, parse_networks
from nodes.ratelimit import Attempt, LoginLimiter

LOGIN = "/api/v1/auth/login"


async def make_user(cluster, name: str, password: str = "correct horse") -> None:
    status, body = await cluster.request(
        "POST", "/api/v1/users", json={"name": name, "password": password}
    )
    assert status == 201, body


async def login(http, cluster, user: str, password: str, **headers: str) -> tuple[int, dict]:
    url = cluster.url(None, LOGIN)
    async with http.post(url, json={"username": user, "password": password}, headers=headers) as r:
        return r.status, await r.json()


# -- pure: the limiter and the proxy headers ------------------------------------------------------


def test_a_reserved_attempt_counts_before_it_is_verified():
    limiter = LoginLimiter(per_user=3, per_address=100, window=60)
    taken = [limiter.reserve("bob", f"10.0.0.{i}", 0.0) for i in range(5)]
    assert [isinstance(t, Attempt) for t in taken] == [True, True, True, False, False]
    assert taken[3] == 60.0
    # a success gives its slot back and clears the user; a refused-for-load attempt never counted
    limiter.succeeded(taken[0])
    assert isinstance(limiter.reserve("bob", "10.0.0.9", 1.0), Attempt)
    again = limiter.reserve("BOB", "10.0.0.9", 1.0)
    assert isinstance(again, Attempt)
    limiter.release(again)
    assert len(limiter.users.hits["bob"]) == 1


def test_forwarded_for_is_believed_only_from_a_trusted_proxy():
    nets = parse_networks(["10.0.0.0/8", "::1"])
    # no proxy configured or not from one: the header is ignored (no picking your own address)
    assert client_address("198.51.100.7", "1.2.3.4", ()) == "198.51.100.7"
    assert client_address("198.51.100.7", "1.2.3.4", nets) == "198.51.100.7"
    # from the proxy: the right-most address that is not a trusted hop; forged left parts ignored
    assert client_address("10.1.1.1", "6.6.6.6, 203.0.113.9", nets) == "203.0.113.9"
    assert client_address("10.1.1.1", "203.0.113.9, 10.2.2.2", nets) == "203.0.113.9"
    assert client_address("::1", "[2001:db8::5]:443", nets) == "2001:db8::5"
    assert client_address("10.1.1.1", "not-an-ip", nets) == "10.1.1.1"
    assert client_address("10.1.1.1", "10.3.3.3", nets) == "10.3.3.3"
    assert forwarded_tls("10.1.1.1", "https", nets) is True
    assert forwarded_tls("198.51.100.7", "https", nets) is None
    assert forwarded_tls("10.1.1.1", "gopher", nets) is None


# -- against a node -------------------------------------------------------------------------------


async def test_forty_concurrent_guesses_do_not_all_get_verified(cluster):
    """Attack: 40 guesses sent at once all passed a limit that was checked before and recorded
    after the 0.1 s hash. Now each takes a slot first: at most 10 are verified, the rest get 429."""
    node = await cluster.start()
    await make_user(cluster, "bob")
    async with aiohttp.ClientSession() as anon:
        answers = await asyncio.gather(
            *(login(anon, cluster, "bob", f"guess {i:04d}") for i in range(40))
        )
        statuses = sorted(status for status, _ in answers)
        assert set(statuses) <= {401, 429}, statuses
        assert 1 <= statuses.count(401) <= 10, statuses
        # even the right password waits now
        status, body = await login(anon, cluster, "bob", "correct horse")
        assert status == 429, body
    # audited: the repeats merge into one entry whose count is written when its window ends
    await node.access.flush_denials(float("inf"))
    status, body = await cluster.request("GET", "/api/v1/audit?actor=bob&kind=denied")
    failed = [e for e in body["entries"] if e["outcome"] == "login_failed"]
    assert sum(e.get("count", 1) for e in failed) == statuses.count(401), failed


async def test_password_hashing_is_bounded_and_leaves_the_default_pool_free(cluster):
    """Attack: a login flood (distinct users, so no per-user limit) hashed in the default thread
    pool; a log read waited 9 s behind it. Now hashing has its own bounded pool: excess logins get
    429 ``busy`` at once, and the default pool answers while the flood runs."""
    node = await cluster.start()
    pool = node.access.hashing
    async with aiohttp.ClientSession() as anon:
        flood = asyncio.gather(*(login(anon, cluster, f"u{i}", "wrong pass") for i in range(40)))
        await asyncio.sleep(0)
        lags = []
        for _ in range(5):  # what a log read (asyncio.to_thread) waits while the flood runs
            t0 = time.monotonic()
            await asyncio.to_thread(lambda: None)
            lags.append(time.monotonic() - t0)
            await asyncio.sleep(0.02)
        answers = await flood
    codes = [body["error"]["code"] for _, body in answers]
    assert {s for s, _ in answers} <= {401, 429}
    assert "busy" in codes, codes  # some were refused instead of queued
    assert pool.refused == codes.count("busy") and pool.in_flight == 0
    assert max(lags) < 0.5, lags  # before: ~40 x 0.1 s of scrypt on ~6 shared threads
    # a refused attempt did not count against the user or the address
    assert len(node.access.limiter.addresses.hits.get("127.0.0.1", ())) == codes.count(
        "unauthenticated"
    )


async def test_lockout_per_address_uses_the_trusted_proxys_forwarded_for(cluster):
    """Attack: behind a proxy every user shared the proxy's address, so one guesser locked out
    everybody. With ``trusted_proxies`` the lockout is per real client; without it the header
    is ignored, so a guesser cannot dodge the limit by inventing addresses."""
    node = await cluster.start(trusted_proxies=["127.0.0.1/32"])
    node.access.limiter = LoginLimiter(per_user=100, per_address=5, window=300)
    await make_user(cluster, "alice")
    async with aiohttp.ClientSession() as anon:
        for i in range(5):
            status, _ = await login(anon, cluster, f"x{i}", "wrong pass", **fwd("203.0.113.5"))
            assert status == 401
        status, _ = await login(anon, cluster, "alice", "correct horse", **fwd("203.0.113.5"))
        assert status == 429
        # another client behind the same proxy is not locked out
        status, body = await login(anon, cluster, "alice", "correct horse", **fwd("203.0.113.6"))
        assert status == 200, body


def fwd(address: str) -> dict[str, str]:
    return {"X-Forwarded-For": address}


async def test_forwarded_for_from_an_untrusted_peer_is_ignored(cluster):
    node = await cluster.start()
    node.access.limiter = LoginLimiter(per_user=100, per_address=5, window=300)
    await make_user(cluster, "alice")
    async with aiohttp.ClientSession() as anon:
        for i in range(5):
            status, _ = await login(anon, cluster, f"x{i}", "wrong pass", **fwd(f"198.51.100.{i}"))
            assert status == 401
        status, _ = await login(anon, cluster, "alice", "correct horse", **fwd("198.51.100.99"))
        assert status == 429
