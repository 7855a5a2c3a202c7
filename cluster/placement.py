"""Placement decisions, pure: which nodes may take a run, which one is preferred, whether a node
has room for it, and why a run waits.

A target is a group (its bindings name nodes, each with a weight) and/or a property selector.
Every worker computes the same answer from the same view of the cluster (live nodes, their admin
state, groups and bindings), so no etcd write is needed to agree on a preferred node:

- the *candidates* of a run are the bindings of its group (or, without a group, every node, with
  weight 1) whose node is up, enabled and matches the selector;
- the *preferred* candidate is chosen by weighted rendezvous hashing of the run id: candidate ``i``
  wins with probability ``w_i / sum(w)``, independently for each run, and removing a node moves
  only the runs that preferred it;
- the preferred node claims at once; any other candidate only after ``handoff_delay`` (the
  preferred node is full, slow or about to vanish), so the spread follows the weights while no
  run waits for a node that cannot take it.

Grants (D155): a group names the projects that may use it. With a project given, a group target
must be granted to it, and a target without a group reaches only nodes *shared* (bound to no
group) or bound to a group granted to the project: binding a node to a group reserves it.

A run through a binding costs the binding's weight out of the node's weight budget while it runs
(a run without a group costs 1); a node never exceeds its capacity (concurrent runs) nor its
budget.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from cluster.selector import Term, matches, parse_selector

ADMIN_STATES = ("enabled", "disabled", "draining", "stopping")
MAX_WEIGHT = 1000


@dataclass(frozen=True, slots=True)
class NodeView:
    """What placement needs to know about one node."""

    id: str
    properties: Mapping[str, str] = field(default_factory=dict)
    capacity: int = 16
    weight_budget: int | None = None  # None: no budget
    admin: str = "enabled"  # "enabled" | "disabled" | "draining" | "stopping" (shutting down)
    up: bool = True
    run_as: frozenset[str] = frozenset()  # users a job's run_as may name here (D142)


@dataclass(frozen=True, slots=True)
class Binding:
    group: str
    name: str
    node: str
    weight: int = 1


@dataclass(frozen=True, slots=True)
class Candidate:
    node: str
    weight: int  # share of the spread, and the cost out of the node's weight budget
    binding: str | None = None
    # the group whose grant lets the project reach this node (None: a shared node, or no project)
    grant: str | None = None

    @property
    def hash_key(self) -> str:
        return f"{self.binding}@{self.node}" if self.binding else self.node


@dataclass(frozen=True, slots=True)
class Placement:
    candidates: tuple[Candidate, ...]
    reason: str | None = None  # set when there is no candidate: "no eligible node: …"

    def for_node(self, node: str) -> list[Candidate]:
        return [c for c in self.candidates if c.node == node]


@dataclass(frozen=True, slots=True)
class Topology:
    """A consistent picture of the cluster as one worker (or the API) sees it."""

    nodes: Mapping[str, NodeView]
    groups: frozenset[str] = frozenset()
    bindings: Mapping[str, tuple[Binding, ...]] = field(default_factory=dict)  # group -> bindings
    # group -> the projects granted it ("*": every project); a group missing here is granted to
    # none. Only consulted when a placement is asked for a project.
    grants: Mapping[str, frozenset[str]] = field(default_factory=dict)

    def allows(self, group: str, project: str) -> bool:
        granted = self.grants.get(group, frozenset())
        return "*" in granted or project in granted

    def reach(self, project: str) -> tuple[frozenset[str], dict[str, str]]:
        """Where a project's runs without a group may go: (nodes reserved by some group,
        node -> a group granted to ``project`` that binds it)."""
        reserved: set[str] = set()
        via: dict[str, str] = {}
        for group in sorted(self.bindings):
            if group not in self.groups:
                continue
            ok = self.allows(group, project)
            for b in self.bindings[group]:
                reserved.add(b.node)
                if ok:
                    via.setdefault(b.node, group)
        return frozenset(reserved), via


class TargetLike(Protocol):
    """Anything that says where its runs go: a job's ``target``, a workflow task's."""

    @property
    def group(self) -> str | None: ...

    @property
    def selector(self) -> str: ...


def for_target(
    target: TargetLike, topo: Topology, project: str | None = None, user: str | None = None
) -> Placement:
    """THE mapping from a target to its placement decision (jobs and workflow tasks alike);
    ``user``: the job's ``run_as`` user, if it names one."""
    return place(target.group, target.selector, topo, project, user)


def _why_not(
    node: NodeView | None, node_id: str, terms: tuple[Term, ...], user: str | None = None
) -> str | None:
    if node is None or not node.up:
        return f"{node_id} is down"
    if node.admin != "enabled":
        return f"{node_id} is {node.admin}"
    if not matches(terms, node.properties):
        return f"{node_id} does not match the selector"
    if user is not None and user not in node.run_as:
        return f"{node_id} may not run jobs as {user!r}"
    return None


def _summary(why: list[str], limit: int = 8) -> str:
    more = f"; and {len(why) - limit} more" if len(why) > limit else ""
    return "; ".join(why[:limit]) + more


def place(
    group: str | None,
    selector: str,
    topo: Topology,
    project: str | None = None,
    user: str | None = None,
) -> Placement:
    """The candidates of a target, or the reason there are none (``no eligible node: …``).
    ``project``: whose run it is, so only nodes granted to it are candidates (None: no check,
    for an operator's "where could this go" question). ``user``: only nodes that may run jobs
    as this user (a job's ``run_as``) are candidates."""
    terms = parse_selector(selector)
    why: list[str] = []
    out: list[Candidate] = []
    if group:
        if group not in topo.groups:
            return Placement((), f"no eligible node: group {group!r} does not exist")
        if project is not None and not topo.allows(group, project):
            return Placement(
                (), f"no eligible node: group {group!r} is not granted to project {project!r}"
            )
        bindings = topo.bindings.get(group, ())
        if not bindings:
            return Placement((), f"no eligible node: group {group!r} has no bindings")
        for b in sorted(bindings, key=lambda b: b.name):
            node = topo.nodes.get(b.node)
            reason = _why_not(node, b.node, terms, user)
            if reason is None and node is not None and not fits_ever(node, b.weight):
                reason = (
                    f"{b.node}: binding {b.name!r} weighs {b.weight}, "
                    f"more than the node's weight budget {node.weight_budget}"
                )
            if reason is not None:
                why.append(f"binding {b.name!r}: {reason}")
            else:
                out.append(Candidate(b.node, b.weight, b.name, group if project else None))
        if not out:
            return Placement((), f"no eligible node in group {group!r}: {_summary(why)}")
        return Placement(tuple(out))
    live = [n for n in topo.nodes.values() if n.up]
    if not live:
        return Placement((), "no eligible node: no node is up")
    reserved, via = topo.reach(project) if project is not None else (frozenset(), {})
    for node in sorted(live, key=lambda n: n.id):
        reason = _why_not(node, node.id, terms, user)
        if reason is None and node.id in reserved and node.id not in via:
            reason = f"{node.id} is reserved by groups not granted to project {project!r}"
        if reason is None and not fits_ever(node, 1):
            reason = f"{node.id} has a weight budget of {node.weight_budget}"
        if reason is not None:
            why.append(reason)
        else:
            out.append(Candidate(node.id, 1, grant=via.get(node.id)))
    if not out:
        if terms and all(r.endswith("does not match the selector") for r in why):
            return Placement((), f"no eligible node: no live node matches {selector!r}")
        return Placement((), f"no eligible node: {_summary(why)}")
    return Placement(tuple(out))


def attempt_key(run_id: str, attempt: int) -> str:
    """What the preferred node is drawn from: each attempt draws afresh, so a retry is not sent
    back to the node it failed on just because the run id is the same."""
    return f"{run_id}.{attempt}"


def _unit(run_id: str, key: str) -> float:
    """A uniform value in (0, 1), fixed for (run, candidate)."""
    digest = hashlib.blake2b(f"{run_id}\0{key}".encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "big") + 0.5) / 2.0**64


def rendezvous_score(run_id: str, candidate: Candidate) -> float:
    """Weighted rendezvous hashing: the largest ``-w / ln(u)`` wins with probability
    ``w / sum(w)`` (the minimum of exponentials with rates ``w``)."""
    return -candidate.weight / math.log(_unit(run_id, candidate.hash_key))


def preferred(run_id: str, candidates: Iterable[Candidate]) -> Candidate | None:
    best: Candidate | None = None
    best_score = -1.0
    for c in candidates:
        if c.weight <= 0:
            continue
        score = rendezvous_score(run_id, c)
        if score > best_score or (score == best_score and best and c.hash_key < best.hash_key):
            best, best_score = c, score
    return best


def fits_ever(node: NodeView, cost: int) -> bool:
    return node.weight_budget is None or cost <= node.weight_budget


def fits(
    *, running: int, used_weight: int, cost: int, capacity: int, weight_budget: int | None
) -> bool:
    """Room for one more run of ``cost`` on a node running ``running`` runs worth
    ``used_weight``."""
    if running + 1 > capacity:
        return False
    return weight_budget is None or used_weight + cost <= weight_budget


@dataclass(frozen=True, slots=True)
class ClaimDecision:
    claim: bool
    candidate: Candidate | None = None
    wait: float | None = None  # look again after this many seconds
    preferred: bool = False


def decide_claim(
    me: str,
    run_id: str,
    placement: Placement,
    *,
    waited: float,
    handoff_delay: float,
    best: Candidate | None = None,
) -> ClaimDecision:
    """Whether ``me`` claims a run now: at once when it is the preferred node, after
    ``handoff_delay`` seconds of the run being claimable when it is another candidate.
    ``best``: the run's preferred candidate when the caller has it cached."""
    mine = placement.for_node(me)
    if not mine:
        return ClaimDecision(False)
    if best is None:
        best = preferred(run_id, placement.candidates)
    if best is not None and best.node == me:
        return ClaimDecision(True, best, preferred=True)
    if waited >= handoff_delay:
        return ClaimDecision(True, preferred(run_id, mine))
    return ClaimDecision(False, wait=handoff_delay - waited)


def admin_status(admin: str, running: int) -> str:
    """What an operator sees: enabled, disabled, draining, or drained (nothing left running)."""
    if admin == "draining" and running == 0:
        return "drained"
    return admin
