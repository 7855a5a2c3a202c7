"""Sharded scheduling (issue 23 item 3, D300-D305): pure decisions, no I/O.

The cluster setting ``scheduler_shards`` (``K``, default 1) splits the jobs over ``K`` shards by a
hash of ``project/name``. Each shard has its own election (shard 0 keeps today's name,
``scheduler``) and its leader fires that shard's jobs, fenced by ITS election key's create
revision. Each node ranks the shards by rendezvous hashing (highest ``score(node, shard)``
first, as ``bench/shardsim.py`` models it) and campaigns for a shard after a delay that grows
with its rank among the live nodes; a leader that sees a better-ranked candidate queued for its
shard hands the shard over (resigns), so shards spread over the nodes and move little when a
node joins or leaves.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable

from cluster.errors import InvalidInput
from cluster.keys import ELECTION_SCHEDULER

MAX_SHARDS = 64  # every node campaigns for every shard: N x K candidate keys, K elections
CAMPAIGN_STEP = 0.5  # s of campaign delay per rank (rank 0 campaigns at once)
MAX_CAMPAIGN_DELAY = 5.0


def check_count(value: object, field: str = "shards") -> int:
    """A valid shard count, or :class:`InvalidInput` naming ``field``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"{field} must be an integer", field=field)
    if not 1 <= value <= MAX_SHARDS:
        raise InvalidInput(f"{field} must be within 1..{MAX_SHARDS}", field=field)
    return value


def parse_setting(value: bytes | None) -> int:
    """The shard count stored in etcd (absent: 1). A value this version cannot read counts as 1
    and is logged by the caller: one scheduler is always safe (fencing and tick keys)."""
    if not value:
        return 1
    try:
        return check_count(json.loads(value).get("shards"))
    except (ValueError, AttributeError):
        return 1


def setting_value(shards: int) -> str:
    return json.dumps({"shards": check_count(shards)})


def _hash64(text: str) -> int:
    return int.from_bytes(hashlib.sha1(text.encode()).digest()[:8], "big")


def job_hash(project: str, name: str) -> int:
    """The hash a job's shard is taken from, for every ``K`` at once (``shard_of`` is it mod K):
    a node's shared watch computes it once per event and routes it to each shard (D356)."""
    return _hash64(f"{project}/{name}")


def shard_of(project: str, name: str, shards: int) -> int:
    """The shard of a job (or workflow) ``project/name`` among ``shards``."""
    if shards <= 1:
        return 0
    return job_hash(project, name) % shards


def election_name(shard: int) -> str:
    """Shard 0 is today's single election, so ``K = 1`` changes nothing."""
    return ELECTION_SCHEDULER if shard == 0 else f"{ELECTION_SCHEDULER}-{shard}"


def score(node: str, shard: int) -> int:
    """Rendezvous weight of ``node`` for ``shard`` (the same function as ``bench.shardsim``)."""
    return _hash64(f"{node}/{shard}")


def ranking(shard: int, nodes: Iterable[str]) -> list[str]:
    """The nodes from the most to the least preferred for ``shard`` (ties by name)."""
    return sorted(set(nodes), key=lambda n: (-score(n, shard), n))


def rank_of(node: str, shard: int, nodes: Iterable[str]) -> int:
    """0 for the preferred node; ``node`` counts as live even if absent from ``nodes``."""
    return ranking(shard, {*nodes, node}).index(node)


def campaign_delay(rank: int, step: float = CAMPAIGN_STEP) -> float:
    """Seconds to wait before campaigning: the preferred node queues first, so it leads, and the
    next ranks queue behind it in order (a failover goes to the next-ranked node, no delay)."""
    return min(MAX_CAMPAIGN_DELAY, max(0, rank) * step)


def hand_over_to(me: str, shard: int, candidates: Iterable[str]) -> str | None:
    """The better-ranked candidate the leader ``me`` of ``shard`` should hand the shard to, or
    None when ``me`` is the best of the queued candidates (it keeps the shard)."""
    best = ranking(shard, {*candidates, me})[0]
    return None if best == me else best


def leaders(nodes: Iterable[str], shards: int) -> dict[int, str]:
    """Shard → the node that leads it once placement settles with every node in ``nodes`` up."""
    live = list(nodes)
    return {s: ranking(s, live)[0] for s in range(shards)} if live else {}


class Shard:
    """One shard of ``count``: which jobs its leader fires. ``count == 1`` owns every job."""

    __slots__ = ("count", "index")

    def __init__(self, index: int = 0, count: int = 1) -> None:
        check_count(count, "scheduler_shards")
        if not 0 <= index < count:
            raise ValueError(f"shard {index} out of 0..{count - 1}")
        self.index, self.count = index, count

    def owns(self, project: str, name: str) -> bool:
        return self.count == 1 or shard_of(project, name, self.count) == self.index

    def owns_hash(self, h: int) -> bool:
        """``owns`` from the job's :func:`job_hash`."""
        return self.count == 1 or h % self.count == self.index

    @property
    def singletons(self) -> bool:
        """Shard 0's leader also runs what is not per job (reaper, retention, slot deadlines,
        notifier, node retention, workflows; D302)."""
        return self.index == 0

    def __repr__(self) -> str:
        return f"Shard({self.index}/{self.count})"
