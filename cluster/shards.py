"""Sharded scheduling (issue 23 item 3, D300-D305): pure decisions, no I/O.

The cluster setting ``scheduler_shards`` (``K``, default 1) splits the jobs over ``K`` shards by a
hash of ``project/name``. Each shard has its own election (shard 0 keeps today's name,
``scheduler``) and its leader fires that shard's jobs, fenced by ITS election key's create
revision. Each node ranks the shards by rendezvous hashing (highest ``score(node, shard)``
first, as ``bench/shardsim.py`` models it) and campaigns for a shard after a delay that grows
with its rank among the live nodes; a leader that sees a better-ranked candidate queued for its
shard hands the shard over (resigns), so shards spread over the nodes and move little when a
node joins or leaves.

Given the live nodes and ``K``, the ranking puts first the node :func:`placement` gives the
shard: rendezvous with a cap on each node's load (D395), never 4/4/0 as the highest score alone
may. Shard 0 weighs what the per-cluster loops its leader runs cost (D302, D395: 4 shards' worth
at K = 8), so its node leads fewer others: 8 shards over 3 nodes lead 1/3/4.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from functools import lru_cache

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


JOB_HASHES_KEPT = 1 << 17  # jobs whose hash is kept (~20 MB at most); beyond, least recent go


@lru_cache(maxsize=JOB_HASHES_KEPT)
def job_hash(project: str, name: str) -> int:
    """The hash a job's shard is taken from, for every ``K`` at once (``shard_of`` is it mod K):
    a node's shared watch routes each event by it (D356). Kept per job (D482): a leader asks for
    it on every tick and every active-run event of the job, a SHA-1 each time before."""
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


# the per-cluster loops' share of a K = 1 leader's work (shard 0's leader runs them, D302):
# measured 0.28-0.35 with bench.shardbench (docs/benchmarks.md, 2026-12-07); placement weighs
# shard 0 by it (D395)
SINGLETONS_SHARE = 0.3


def singleton_weight(shards: int, share: float = SINGLETONS_SHARE) -> int:
    """Shard 0's weight in a node's load, in shards: itself plus the per-cluster loops, which
    cost ``share`` of a K = 1 leader's work while each shard costs ``(1 - share) / K`` of it
    (D395): 4 at K = 8, 8 at K = 16."""
    if shards <= 1:
        return 1
    return max(2, 1 + round(share * shards / (1 - share)))


def shard_weight(shard: int, shards: int) -> int:
    return singleton_weight(shards) if shard == 0 and shards > 1 else 1


def placement(nodes: Iterable[str], shards: int) -> dict[int, str]:
    """Shard → the node that should lead it when ``nodes`` are live: rendezvous with bounded
    loads (D395). Shard 0, the heaviest (:func:`singleton_weight`), goes first to its
    best-scored node; then the other (node, shard) pairs are taken from the highest score down
    and a pair is kept while the shard has no node and the node's load stays within its cap
    (the shards' total weight over the nodes, rounded up; when shard 0 alone reaches that, its
    node leads nothing else and the other shards split evenly over the other nodes), so every
    node leads its fair share and a shard still goes to a node that scores it high.
    Deterministic: every node computes the same placement from the same live set."""
    return dict(_placement(frozenset(nodes), shards))


@lru_cache(maxsize=64)
def _placement(nodes: frozenset[str], shards: int) -> tuple[tuple[int, str], ...]:
    if not nodes:
        return ()
    live = sorted(nodes)
    total = sum(shard_weight(s, shards) for s in range(shards))
    heavy = shard_weight(0, shards)
    load = dict.fromkeys(live, 0)
    # shard 0 first, on its best-scored node: the heaviest, it would not fit once the others
    # had filled the nodes (D395)
    home = min(live, key=lambda n: (-score(n, 0), n))
    out: dict[int, str] = {0: home}
    load[home] += heavy
    cap = dict.fromkeys(live, -(-total // len(live)))
    if heavy >= cap[home] and len(live) > 1:
        # shard 0 alone is a node's share: the other shards split evenly over the other nodes
        # (one cap of shard 0's weight for all let a node of 8 lead 6 of 16 shards, D395)
        rest = -(-(shards - 1) // (len(live) - 1))
        cap = {n: heavy if n == home else rest for n in live}
    pairs = sorted((-score(n, s), n, s) for n in live for s in range(1, shards))
    for _, node, shard in pairs:
        weight = shard_weight(shard, shards)
        if shard not in out and load[node] + weight <= cap[node]:
            out[shard] = node
            load[node] += weight
    for shard in range(shards):  # a heavy shard the caps left out: the least loaded node
        if shard not in out:
            node = min(live, key=lambda n: (load[n], -score(n, shard), n))
            out[shard] = node
            load[node] += shard_weight(shard, shards)
    return tuple(sorted(out.items()))


def ranking(shard: int, nodes: Iterable[str], shards: int | None = None) -> list[str]:
    """The nodes from the most to the least preferred for ``shard`` (ties by name). With
    ``shards`` (K) the node :func:`placement` gives the shard comes first (D395); without, the
    highest rendezvous score alone decides."""
    live = set(nodes)
    order = sorted(live, key=lambda n: (-score(n, shard), n))
    if shards is not None and shards > 1 and live:
        placed = placement(live, shards)[shard]
        order.remove(placed)
        order.insert(0, placed)
    return order


def rank_of(node: str, shard: int, nodes: Iterable[str], shards: int | None = None) -> int:
    """0 for the preferred node; ``node`` counts as live even if absent from ``nodes``."""
    return ranking(shard, {*nodes, node}, shards).index(node)


def campaign_delay(rank: int, step: float = CAMPAIGN_STEP) -> float:
    """Seconds to wait before campaigning: the preferred node queues first, so it leads, and the
    next ranks queue behind it in order (a failover goes to the next-ranked node, no delay)."""
    return min(MAX_CAMPAIGN_DELAY, max(0, rank) * step)


def hand_over_to(
    me: str,
    shard: int,
    candidates: Iterable[str],
    *,
    live: Iterable[str] = (),
    shards: int | None = None,
) -> str | None:
    """The better-ranked candidate the leader ``me`` of ``shard`` should hand the shard to, or
    None when ``me`` is the best of the queued candidates (it keeps the shard). The ranking is
    over the ``live`` nodes (with the candidates and ``me``): the placement depends on all of
    them (D395), though only a queued candidate can be handed to."""
    queued = {*candidates, me}
    best = next(n for n in ranking(shard, {*live, *queued}, shards) if n in queued)
    return None if best == me else best


def current_candidates(queued: Iterable[tuple[str, int]], lease_of: Mapping[str, int]) -> list[str]:
    """The nodes of the ``queued`` candidacies ``(node, lease of the candidacy key)`` made under
    their node's CURRENT lease (``lease_of``: node → the lease of its live ``nodes/<id>`` record).
    A node restarted within a TTL still has its old, dead candidacy queued until that lease
    expires: handing the shard to it would leave the shard with a dead leader (D304)."""
    return [node for node, lease in queued if lease_of.get(node) == lease]


def leaders(nodes: Iterable[str], shards: int) -> dict[int, str]:
    """Shard → the node that leads it once placement settles with every node in ``nodes`` up."""
    live = list(nodes)
    return {s: ranking(s, live, shards)[0] for s in range(shards)} if live else {}


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
