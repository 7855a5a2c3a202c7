"""The ``scheduler_shards`` cluster setting in etcd: read it, change it safely (D300)."""

from __future__ import annotations

from cluster.etcd import Etcd, Op
from cluster.keys import ELECTION_SCHEDULER, Keys
from cluster.shards import check_count, election_name, parse_setting, setting_value


async def read_shards(etcd: Etcd, keys: Keys) -> tuple[int, int, int]:
    """``(K, mod revision of the setting or 0, revision read at)``."""
    res = await etcd.range(keys.scheduler_shards(), prefix=False)
    kv = res.kvs[0] if res.kvs else None
    return parse_setting(kv.value if kv else None), (kv.mod_revision if kv else 0), res.revision


async def set_shards(etcd: Etcd, keys: Keys, shards: int) -> bool:
    """Set K; False when it already was K. The new value and the deletion of EVERY shard
    election's keys are one transaction: at that revision every leader of the old split is
    deposed (its fenced writes fail), and a candidacy is only written under a compare that the
    setting did not move since its node read K, so no two leaders ever fire one job (D300)."""
    check_count(shards)
    current, _, _ = await read_shards(etcd, keys)
    if current == shards:
        return False
    ops = [Op.put(keys.scheduler_shards(), setting_value(shards))]
    ops += [Op.delete(p, prefix=True) for p in keys.shard_elections()]
    await etcd.txn([], ops)
    return True


async def shard_leaders(etcd: Etcd, keys: Keys, shards: int) -> dict[int, str | None]:
    """Shard → the node leading it now (None: nobody), read in one range (every candidacy of
    every shard: at most ``shards`` x live nodes keys)."""
    root = keys.election(ELECTION_SCHEDULER)[: -len(ELECTION_SCHEDULER) - 1]
    res = await etcd.range(root, sort="create")
    out: dict[int, str | None] = dict.fromkeys(range(shards))
    names = {election_name(i): i for i in range(shards)}
    for kv in res.kvs:  # oldest candidacy first: the first seen per election leads it
        shard = names.get(keys.tail(kv.key, root)[0])
        if shard is not None and out[shard] is None:
            out[shard] = kv.value.decode()
    return out
