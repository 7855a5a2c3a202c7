"""Mutations of access: who may do what (roles, projects, tokens, signatures), review-sec,
the run-history quota and incoming hooks."""

from __future__ import annotations

from tests.mutations.entry import Mutation

REVIEW_SEC = "tests/security/test_review_sec.py"
HISTORY = "tests/security/test_run_history_quota.py"
HOOKS = "tests/security/test_hook_attacks.py"
HISTORY_COUNT = "tests/integration/test_history_accounting.py"
SCOPE_COUNTS = "tests/security/test_scope_counts.py"
BURSTS = "tests/security/test_admission_bursts.py"

MUTATIONS: tuple[Mutation, ...] = (
    # -- access ----------------------------------------------------------------------------------
    Mutation(
        "auth-rule-role",
        "cluster/permissions.py",
        r'return Requirement\("project", rule\.role, project=project\)',
        'return Requirement("project", "viewer", project=project)',
        ("tests/unit/test_identity.py::test_rule_table",),
        "each project route needs its role (not every one just viewer)",
    ),
    Mutation(
        "auth-project-confinement",
        "cluster/permissions.py",
        r'best = max\(best, RANK\.get\(grants\.get\(project, ""\), -1\)\)',
        "best = max([best, *(RANK.get(g, -1) for g in grants.values())])",
        ("tests/unit/test_identity.py::test_roles_are_a_chain_and_grants_scope_them",),
        "a role on one project gives nothing on another",
    ),
    Mutation(
        "auth-fail-closed",
        "cluster/permissions.py",
        r'return Requirement\(rule\.access, rule\.role\)\n    return Requirement\("cluster"\)',
        'return Requirement(rule.access, rule.role)\n    return Requirement("authenticated")',
        ("tests/unit/test_identity.py::test_rule_table",),
        "a path no rule matches needs cluster admin",
    ),
    Mutation(
        "token-expiry",
        "cluster/identity.py",
        r" or record\.expired\(self\.clock\(\)\)",
        "",
        ("tests/integration/test_access.py::test_token_expiry_revocation_and_disabled_user",),
        "an expired API token authenticates nobody",
    ),
    Mutation(
        "peer-signature",
        "nodes/api/signing.py",
        r"if not hmac\.compare_digest\(mac\.hexdigest\(\), sig\):",
        "if False:",
        ("tests/unit/test_identity.py::test_signature_covers_everything_and_replays_fail",),
        "a node-to-node request is authentic: its signature is checked",
    ),
    Mutation(
        "peer-replay",
        "nodes/api/signing.py",
        r"if not nonces\.add\(nonce, now\):",
        "if False:",
        (
            "tests/unit/test_identity.py::test_signature_covers_everything_and_replays_fail",
            "tests/security/test_peer_hardening.py::"
            "test_a_signed_request_cannot_be_replayed_to_another_node",
        ),
        "a signed node-to-node request cannot be replayed",
    ),
    Mutation(
        "auth-ambiguous-project",
        "nodes/api/access.py",
        r"if checked is not None and routed is not None and routed != checked:",
        "if False:",
        (
            "tests/integration/test_access.py::"
            "test_a_route_that_does_not_validate_names_is_still_confined",
        ),
        "the project checked is the project routed (encoded slashes)",
    ),
    # -- review-sec (D200-D203) -------------------------------------------------------------------
    Mutation(
        "project-delete-data",
        "nodes/api/auth.py",
        r"\[Op\.delete\(p, prefix=True\) for p in keys\.project_data\(name\)\]",
        "[]",
        (
            f"{REVIEW_SEC}::test_a_new_project_of_a_deleted_ones_name_gets_none_of_its_secrets_or_runs",
        ),
        "a new project of a deleted one's name gets none of its secrets or runs",
    ),
    Mutation(
        "audit-own-budget",
        "cluster/audit.py",
        r'return "own" if is_own_credentials\(entry\) else "changes"',
        'return "changes"',
        (f"{REVIEW_SEC}::test_a_viewer_churning_own_tokens_and_sessions_cannot_push_changes_out",),
        "churning one's own tokens and sessions cannot push the history of changes out",
    ),
    Mutation(
        "session-cap",
        "cluster/identity.py",
        r'ended = await self\._sessions_to_end\(user\) if kind == "session" else \[\]',
        "ended = []",
        (f"{REVIEW_SEC}::test_logging_in_again_and_again_does_not_pile_up_sessions",),
        "a user holds a bounded number of live sessions",
    ),
    Mutation(
        "login-limit-ipv6-64",
        "nodes/api/ratelimit.py",
        r"return str\(ipaddress\.IPv6Network\(\(ip, IPV6_PREFIX\), strict=False\)\)",
        "return str(ip)",
        (f"{REVIEW_SEC}::test_password_spray_from_fresh_ipv6_addresses_of_one_64_is_limited",),
        "the per-address login limit counts an IPv6 client by its /64",
    ),
    # -- the run-history quota (D318) ----------------------------------------------------------
    Mutation(
        "run-history-quota",
        "cluster/quota_store.py",
        r"if over_quota\(used, adding, limits\.run_history_bytes\):",
        "if False:",
        (f"{HISTORY}::test_an_editor_cannot_fill_etcd_through_run_history",),
        "a project keeps no more run history than run_history_bytes allows",
    ),
    Mutation(
        "run-history-ticks-skipped",
        "cluster/runs.py",
        r"and job\.project in self\.history_over:",
        "and False:",
        (f"{HISTORY_COUNT}::test_creations_are_refused_and_ticks_skipped_at_the_quota",),
        "the leader's ticks of a project at its run-history quota make skipped runs",
    ),
    Mutation(
        "run-history-prune-releases",
        "nodes/leader/retention.py",
        r"                        Op\.delete\(self\.keys\.history_charge\(jk\[0\], run_id\)\),\n",
        "",
        (
            f"{HISTORY_COUNT}::test_charges_follow_the_records_through_create_finish_cancel_and_prune",
        ),
        "retention releases the charge of every run it prunes",
    ),
    Mutation(
        "run-history-charge",
        "cluster/history.py",
        r"    if run\.finished:\n        return doc_bytes\n",
        "",
        (f"{HISTORY}::test_finished_records_are_charged_what_they_take",),
        "a finished run record is charged exactly the bytes it takes",
    ),
    Mutation(
        "run-result-as-stored",
        "nodes/worker/executing.py",
        r"if result is not None and len\(to_json\(result\)\) > MAX_RESULT:",
        "if False:",
        (f"{HISTORY}::test_a_result_that_grows_when_stored_is_dropped",),
        "a run's result is at most MAX_RESULT bytes as stored",
    ),
    # -- incoming hooks (D269, D270) -----------------------------------------------------------
    Mutation(
        "hook-signature",
        "cluster/hooks.py",
        r"hit \|= hmac\.compare_digest\(want, sig\.encode\(\)\)",
        "hit = True",
        (
            f"{HOOKS}::test_forgery_and_replay_are_refused",
            "tests/unit/test_hook_logic.py::test_signature_round_trip_and_forgeries",
        ),
        "a hook delivery starts a run only with the hook's signature over its body",
    ),
    Mutation(
        "hook-timestamp-window",
        "cluster/hooks.py",
        r"if abs\(skew\) > MAX_SKEW:",
        "if False:",
        (f"{HOOKS}::test_forgery_and_replay_are_refused",),
        "a captured hook delivery cannot be sent again after 5 minutes",
    ),
    # -- caps on a scope's count under concurrent creations (D500) -----------------------------
    Mutation(
        "scope-count-gate",
        "cluster/calendar_store.py",
        r"guards\.append\(Compare\.unchanged_since\(base, count\.revision\)\)",
        "pass",
        (f"{SCOPE_COUNTS}::test_a_burst_of_creations_cannot_pass_a_projects_caps",),
        "a burst of creations cannot pass a project's 100 calendars or windows",
    ),
    Mutation(
        "token-count-gate",
        "cluster/identity.py",
        r"return \[Compare\.unchanged_since\(self\.keys\.user_tokens\(user\), revision\)\]",
        "return []",
        (f"{SCOPE_COUNTS}::test_a_burst_of_token_creations_cannot_pass_a_users_cap",),
        "a burst of token creations cannot pass a user's 100 API tokens",
    ),
    # -- what manual runs and new documents hold against a project's caps (D512-D515) -------
    Mutation(
        "run-hold-compare",
        "nodes/api/rungate.py",
        r"guard = \[Compare\.modified\(key, kv\.mod_revision if kv else 0\)\]\n(\s+)res = ",
        r"guard = []\n\1res = ",
        (f"{BURSTS}::test_a_burst_of_triggers_on_two_nodes_cannot_pass_the_pending_cap",),
        "admissions on two nodes cannot both pass one count of a project's unfinished runs",
    ),
    Mutation(
        "run-hold-counted",
        "nodes/api/rungate.py",
        r"held = others_held\(value, self\.node\.node_id, now\)\.plus\(state\.held\)",
        "held = Held()",
        (
            f"{BURSTS}::test_a_burst_of_triggers_on_two_nodes_cannot_pass_the_pending_cap",
            f"{BURSTS}::test_a_burst_of_keyed_deliveries_cannot_pass_a_hooks_keys",
            f"{BURSTS}::test_a_burst_of_creations_cannot_pass_a_projects_job_and_workflow_quotas",
        ),
        "runs, idempotency keys and documents admitted but not yet written count against caps",
    ),
    Mutation(
        "token-index-entry",
        "cluster/identity.py",
        r"ops = \[Op\.put\(key, dumps\(record\), lease\), Op\.put\(\*self\._entry\(record\), lease\)\]",
        "ops = [Op.put(key, dumps(record), lease)]",
        (
            "tests/security/test_token_index.py::test_creating_a_token_reads_only_its_users_tokens",
            f"{SCOPE_COUNTS}::test_a_burst_of_token_creations_cannot_pass_a_users_cap",
        ),
        "a user's token count sees every token of theirs (each is written with its index entry)",
    ),
)
