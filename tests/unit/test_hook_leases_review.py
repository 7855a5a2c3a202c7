"""Review of the hooks branch (D284): the lease idempotency keys ride on. Concurrent keyed
deliveries when a node has no current lease (at start, or past the hour) each granted a 25-hour
lease of their own; now they wait for one grant. A lease etcd lost is replaced once."""

from __future__ import annotations

import asyncio

from cluster.hook_store import DeliveryLeases


class SlowEtcd:
    def __init__(self) -> None:
        self.granted: list[int] = []

    async def grant(self, ttl: int) -> int:
        await asyncio.sleep(0)  # a round trip: others run meanwhile
        await asyncio.sleep(0)
        self.granted.append(ttl)
        return 100 + len(self.granted)


async def test_a_burst_of_deliveries_shares_one_grant():
    etcd, now = SlowEtcd(), [0.0]
    leases = DeliveryLeases(etcd, clock=lambda: now[0])  # type: ignore[arg-type]
    got = await asyncio.gather(*(leases.current() for _ in range(50)))
    assert set(got) == {101} and len(etcd.granted) == 1
    now[0] = 3601.0  # the next hour: one new lease for the next burst
    got = await asyncio.gather(*(leases.current() for _ in range(50)))
    assert set(got) == {102} and len(etcd.granted) == 2
    # etcd lost the lease: every delivery that saw it fail asks fresh, one grant replaces it
    got = await asyncio.gather(*(leases.current(fresh=True) for _ in range(20)))
    assert set(got) == {103} and len(etcd.granted) == 3
