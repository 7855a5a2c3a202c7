"""Who may do what: roles, grants and the one rule table every HTTP request is checked against.

Roles form a chain, ``viewer < operator < editor < admin``: each role can do everything the roles
below it can. Editors can already run anything (they write the commands and schedules), so an
editor that cannot trigger would be a restriction without protection. A grant gives a role on one
project or, with ``*``, on every project; cluster-wide things (users, audit, node groups) need
``admin`` on ``*``.

Rules match the request *path* by segment patterns, not the handler, so routes added later by
other modules are covered the moment they exist; the first matching rule wins and a path no rule
matches needs cluster admin (fail closed). Pure functions, no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

Role = Literal["viewer", "operator", "editor", "admin"]
ROLES: tuple[Role, ...] = ("viewer", "operator", "editor", "admin")
RANK: dict[str, int] = {role: i for i, role in enumerate(ROLES)}
ALL_PROJECTS = "*"

# Who a rule lets in: nobody needs credentials, any authenticated user, the user named in the
# path (or an admin), peers only (node-to-node signing), a role on a project / on ``*``, or
# "metrics": the cluster-wide read-outs (/metrics, /status) that name every project, job and
# node, open to a viewer on ``*`` and to metrics-only credentials (D166).
Access = Literal["public", "authenticated", "self", "peer", "project", "cluster", "metrics"]

READ = frozenset({"GET", "HEAD", "OPTIONS"})
WRITE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
ANY = READ | WRITE


@dataclass(frozen=True, slots=True)
class Rule:
    methods: frozenset[str]
    pattern: str  # segments; "{name}" binds one segment, "**" matches the rest (also nothing)
    access: Access
    role: Role = "admin"

    def match(self, method: str, path: str) -> dict[str, str] | None:
        if method not in self.methods:
            return None
        return match_path(self.pattern, path)


@dataclass(frozen=True, slots=True)
class Requirement:
    access: Access
    role: Role = "admin"
    project: str | None = None  # for access == "project"
    user: str | None = None  # for access == "self"


def match_path(pattern: str, path: str) -> dict[str, str] | None:
    want = pattern.strip("/").split("/") if pattern.strip("/") else []
    got = path.strip("/").split("/") if path.strip("/") else []
    bound: dict[str, str] = {}
    for i, seg in enumerate(want):
        if seg == "**":
            return bound
        if i >= len(got):
            return None
        if seg.startswith("{") and seg.endswith("}"):
            if not got[i]:
                return None
            bound[seg[1:-1]] = got[i]
        elif seg != got[i]:
            return None
    return bound if len(got) == len(want) else None


P = "/api/v1/projects/{project}"
RUN_ACTIONS = ("cancel", "abort", "rerun", "retry", "resume", "skip", "report", "mark")

RULES: tuple[Rule, ...] = (
    # open: probes and the login form (/metrics and /status: "metrics", below)
    Rule(READ, "/healthz", "public"),
    Rule(READ, "/readyz", "public"),
    Rule(READ, "/metrics", "metrics"),
    Rule(READ, "/status", "metrics"),
    Rule(frozenset({"POST"}), "/api/v1/auth/login", "public"),
    Rule(READ, "/", "public"),  # redirects to the web UI
    Rule(READ, "/ui/**", "public"),
    # the API's description: routes and schemas, no data (D247)
    Rule(READ, "/api/v1/openapi.json", "public"),
    # incoming hooks: no user credentials; the handler checks the hook's signature or token,
    # and answers an unknown hook exactly as a bad signature (D269, D272)
    Rule(frozenset({"POST"}), "/api/v1/hooks/{project}/{hook}", "public"),
    Rule(frozenset({"POST"}), "/register/{hook}", "public"),
    # node to node: checked by the peer security level, never by user credentials
    Rule(ANY, "/internal/v1/**", "peer"),
    # any user: who am I, log out, read the cluster's shape
    Rule(ANY, "/api/v1/auth/**", "authenticated"),
    Rule(READ, "/api/v1/nodes", "authenticated"),
    Rule(READ, "/api/v1/nodes/**", "authenticated"),
    Rule(READ, "/api/v1/groups", "authenticated"),
    Rule(READ, "/api/v1/groups/**", "authenticated"),
    Rule(READ, "/api/v1/projects", "authenticated"),
    Rule(READ, "/api/v1/placement", "authenticated"),
    Rule(READ, "/api/v1/cron/preview", "authenticated"),
    Rule(READ, "/api/v1/budgets", "authenticated"),  # writing them: cluster admin (D274)
    Rule(READ, "/api/v1/budgets/**", "authenticated"),
    # cluster calendars and windows apply to every project's jobs: anyone reads them, cluster
    # admins write them (no rule: fail closed); the freeze likewise; the plan filters by role
    Rule(READ, "/api/v1/calendars", "authenticated"),
    Rule(READ, "/api/v1/calendars/{name}", "authenticated"),
    Rule(READ, "/api/v1/blackouts", "authenticated"),
    Rule(READ, "/api/v1/blackouts/{name}", "authenticated"),
    Rule(READ, "/api/v1/freeze", "authenticated"),
    Rule(READ, "/api/v1/plan", "authenticated"),
    # a user manages their own password and tokens; admins manage everyone's
    Rule(ANY, "/api/v1/users/{user}/tokens", "self"),
    Rule(ANY, "/api/v1/users/{user}/tokens/**", "self"),
    Rule(frozenset({"PUT", "POST"}), "/api/v1/users/{user}/password", "self"),
    Rule(READ, "/api/v1/users/{user}", "self"),
    # inside a project (creating, changing and deleting projects themselves: cluster admin)
    Rule(WRITE, P, "cluster"),
    Rule(WRITE, f"{P}/run-limits", "cluster"),  # a project admin must not lift its own caps
    Rule(READ, P, "project", "viewer"),
    Rule(READ, f"{P}/**", "project", "viewer"),
    Rule(frozenset({"POST"}), f"{P}/jobs/{{job}}/runs", "project", "operator"),
    Rule(frozenset({"POST"}), f"{P}/jobs/{{job}}/backfill", "project", "operator"),
    Rule(frozenset({"POST"}), f"{P}/workflows/{{workflow}}/executions", "project", "operator"),
    Rule(WRITE, f"{P}/executions/**", "project", "operator"),
    *(
        Rule(frozenset({"POST"}), f"{P}/runs/{{run}}/{a}", "project", "operator")
        for a in RUN_ACTIONS
    ),
    *(
        Rule(frozenset({"POST"}), f"{P}/executions/{{execution}}/{a}", "project", "operator")
        for a in RUN_ACTIONS
    ),
    Rule(WRITE, f"{P}/jobs", "project", "editor"),
    Rule(WRITE, f"{P}/jobs/**", "project", "editor"),
    Rule(WRITE, f"{P}/workflows", "project", "editor"),
    Rule(WRITE, f"{P}/workflows/**", "project", "editor"),
    Rule(WRITE, f"{P}/notifications", "project", "editor"),
    Rule(WRITE, f"{P}/calendars/{{name}}", "project", "editor"),  # D236
    Rule(WRITE, f"{P}/blackouts/{{name}}", "project", "editor"),  # D237
    # hooks: editors write them (a hook starts runs: what an editor may already do); viewers
    # read them, without the secret (D268)
    Rule(frozenset({"PUT", "DELETE"}), f"{P}/hooks/{{hook}}", "project", "editor"),
    # secrets: viewers list names (jobs show their references anyway), editors set and delete
    # them (an editor can already read any secret through a job it writes, D146); rotation of
    # every project's values is cluster admin (no rule: fail closed)
    Rule(frozenset({"PUT", "DELETE"}), f"{P}/secrets/{{secret}}", "project", "editor"),
    Rule(WRITE, f"{P}/**", "project", "admin"),
    # everything else (projects, users, audit, groups, bindings, node state): cluster admin
)


def requirement(method: str, path: str, rules: Sequence[Rule] = RULES) -> Requirement:
    """What a request needs; a path no rule matches needs cluster admin."""
    method = method.upper()
    for rule in rules:
        bound = rule.match(method, path)
        if bound is None:
            continue
        if rule.access == "project":
            project = bound.get("project")
            if project is None or project == ALL_PROJECTS:
                return Requirement("cluster")
            return Requirement("project", rule.role, project=project)
        if rule.access == "self":
            return Requirement("self", user=bound.get("user"))
        return Requirement(rule.access, rule.role)
    return Requirement("cluster")


def role_on(grants: Mapping[str, str], project: str | None) -> int:
    """The rank of the best role ``grants`` give on ``project`` (None: cluster-wide); -1: none."""
    best = RANK.get(grants.get(ALL_PROJECTS, ""), -1)
    if project is not None:
        best = max(best, RANK.get(grants.get(project, ""), -1))
    return best


def is_admin(grants: Mapping[str, str]) -> bool:
    return role_on(grants, None) >= RANK["admin"]


def allows(req: Requirement, user: str, grants: Mapping[str, str]) -> bool:
    """Does an (enabled, authenticated) ``user`` with ``grants`` meet ``req``?"""
    if req.access in ("public", "authenticated"):
        return True
    if req.access == "peer":
        return False  # users never pass as peers
    if req.access == "self":
        return req.user == user or is_admin(grants)
    if req.access == "project":
        return role_on(grants, req.project) >= RANK[req.role]
    if req.access == "metrics":
        return role_on(grants, None) >= RANK["viewer"]
    return is_admin(grants)


def metrics_scope_allows(req: Requirement, path: str) -> bool:
    """What a metrics-only token may call: the read-outs, and who-am-I / log out."""
    return req.access == "metrics" or path in ("/api/v1/auth/me", "/api/v1/auth/logout")


def visible_projects(grants: Mapping[str, str], projects: Sequence[str]) -> list[str]:
    if role_on(grants, None) >= 0:
        return list(projects)
    return [p for p in projects if role_on(grants, p) >= 0]


GRANT_KEY = re.compile(r"^(\*|[a-z0-9][a-z0-9\-_.]{0,62})$")
