"""Findings of the second security review (review-sec): each attack as a stranger sent it, against
a real node where it needs one, and the pure check behind the fix with plain values."""

from __future__ import annotations

import aiohttp
import pytest

from nodes.ratelimit import LoginLimiter, address_key
from tests.security.test_login_limits import fwd, login, make_user

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
