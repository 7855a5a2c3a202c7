"""Review of the hooks branch (D284). The lease idempotency keys ride on: concurrent keyed
deliveries when a node has no current lease (at start, or past the hour) each granted a 25-hour
lease of their own; now they wait for one grant, and a lease etcd lost is replaced once. And a
delivery to an unknown hook does the work a known one's does (no timing oracle for names)."""

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


def test_an_unknown_hook_costs_the_parse_and_open_of_a_known_one(monkeypatch):
    """D269 says an unknown hook costs what a known one does; the known one's record parse and
    AES-GCM open (~11 µs) were missing for unknown names. Now both open a secret once."""
    from cluster.hook_store import HookStore
    from cluster.hooks import HookRecord
    from cluster.secretbox import KeyRing, new_key
    from nodes.api.hooks import HookApi

    ring = KeyRing.parse(new_key())
    opened: list[str] = []
    parsed: list[int] = []
    real_open, real_parse = KeyRing.open, HookRecord.model_validate_json

    def spy_open(self, project, name, sealed):
        opened.append(name)
        return real_open(self, project, name, sealed)

    def spy_parse(raw, *a, **kw):
        parsed.append(1)
        return real_parse(raw, *a, **kw)

    monkeypatch.setattr(KeyRing, "open", spy_open)
    monkeypatch.setattr(HookRecord, "model_validate_json", spy_parse)
    store = object.__new__(HookStore)
    store._ring = lambda: ring
    api = object.__new__(HookApi)
    ok = api._authentic(store, None, b"{}", 1, ["0" * 64], None)
    assert ok is False
    assert len(opened) == 1 and len(parsed) == 1  # the decoy: one parse, one (failed) open
