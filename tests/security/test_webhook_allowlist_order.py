"""An allow-list entry a cluster admin removed is refused from the next webhook send on (D371).

The SSRF guard (D170) lets webhooks reach private addresses only when a cluster admin
allow-lists them. The leader's guard kept the setting for up to ``GUARD_TTL`` (5 s): an admin
who removed an entry (answered 200) — say, because an inside service was being reached through
it — still had runs finishing right after send their documents there. The setting is now read
at every send (one key; the cluster's own addresses still refresh every 5 s)."""

from __future__ import annotations

import ipaddress
import json
from types import SimpleNamespace

import pytest

from cluster.netguard import Refused
from nodes.webhooks import GuardSource

INSIDE = ipaddress.ip_address("127.0.0.1")


async def test_a_removed_allow_list_entry_is_refused_at_the_next_send(etcd, keys):
    await etcd.put(keys.webhook_settings(), json.dumps({"allow": ["127.0.0.1/32"]}))
    node = SimpleNamespace(
        etcd=etcd,
        keys=keys,
        config=SimpleNamespace(advertise_address="10.9.9.9:8080", etcd=["http://10.9.9.8:2379"]),
    )
    source = GuardSource(node)  # type: ignore[arg-type]
    (await source.refresh()).check_address("127.0.0.1", INSIDE, 80)  # allowed: the control
    await etcd.put(keys.webhook_settings(), json.dumps({"allow": []}))  # removed (answered)
    guard = await source.refresh()  # the next send, well within the 5 s of before
    with pytest.raises(Refused):
        guard.check_address("127.0.0.1", INSIDE, 80)
    # and the setting deleted outright is the default: nothing private allowed
    await etcd.put(keys.webhook_settings(), json.dumps({"allow": ["127.0.0.1/32"]}))
    (await source.refresh()).check_address("127.0.0.1", INSIDE, 80)
    await etcd.delete(keys.webhook_settings())
    with pytest.raises(Refused):
        (await source.refresh()).check_address("127.0.0.1", INSIDE, 80)
