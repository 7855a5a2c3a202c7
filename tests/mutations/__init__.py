"""The mutation check: the suite must fail when a safety check is removed (issue 25, D175).

Each :class:`Mutation` names one compare or check a guarantee rests on, finds it in the code by
a regular expression (so it survives reformatting and moves within the file; if the pattern no
longer matches exactly ``count`` times the check FAILS, asking for the entry to be updated),
replaces it in a temporary copy of the code and runs the tests named for it there. A mutation is
*caught* when those tests fail (pytest exit code 1); anything else (they pass, or pytest could
not even run them) fails the check.

    python -m tests.mutations              # every mutation, 2 at a time
    python -m tests.mutations --list       # names, files and catching tests
    python -m tests.mutations claim-queue-revision completion-claim-revision
    python -m tests.mutations --patterns   # only check that every pattern still matches

Adding a mutation is one entry in ``MUTATIONS`` (and a row in docs/reliability.md).
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# what a copy needs to import and test the code (docs, .git and the venv stay behind)
COPIED = ("cluster", "nodes", "logstore", "tests", "bench", "helm", "pyproject.toml")

CLAIMS = "tests/integration/test_claims.py"
FENCING = "tests/integration/test_fencing.py"
REVIEW_SEC = "tests/security/test_review_sec.py"
HISTORY = "tests/security/test_run_history_quota.py"
BUDGETS = "tests/integration/test_budget_claims.py"
HOOKS = "tests/security/test_hook_attacks.py"
FENCED_SLOTS = "tests/integration/test_fenced_slots.py"
HISTORY_COUNT = "tests/integration/test_history_accounting.py"
ADMIN_STATE = "tests/integration/test_claim_admin_state.py"
SHARDS = "tests/integration/test_shard_scheduler.py"
REUSE = "tests/security/test_cgroup_reuse.py"
RUNDIR = "tests/security/test_run_dir_reuse.py"
ADDED_RULE = "tests/integration/test_notify_added_rule_order.py"
OWN = "tests/integration/test_own_claims.py"
RACES = "tests/integration/test_own_claims_races.py"
LOST = "tests/integration/test_own_claims_lost.py"
RUN_AS = "tests/security/test_own_claim_run_as.py"
HELD = "tests/unit/test_held_claims.py"


@dataclass(frozen=True)
class Mutation:
    name: str
    file: str  # relative to the repository root
    pattern: str  # a regular expression (re.S: ``.`` crosses lines)
    replacement: str  # re.sub replacement (``\1`` etc.)
    tests: tuple[str, ...]  # pytest node ids that must fail with the mutation
    guards: str  # the guarantee, in a few words (docs/reliability.md lists it)
    count: int = 1  # how many matches the pattern must have (all are replaced)


class PatternGone(Exception):
    """The code moved on: the pattern no longer matches as the entry says."""


MUTATIONS: tuple[Mutation, ...] = (
    # -- the worker ----------------------------------------------------------------------------
    Mutation(
        "claim-queue-revision",
        "nodes/worker/claiming.py",
        r"compares = \[Compare\.modified\(key, kv\.mod_revision\), ",
        "compares = [",
        (
            f"{CLAIMS}::test_a_claim_made_with_a_queue_entry_already_taken_is_refused",
            f"{CLAIMS}::test_three_workers_without_handoff_delay_run_each_of_40_runs_once",
        ),
        "a queued run is claimed once: the claim compares the queue entry's revision",
    ),
    Mutation(
        "completion-claim-revision",
        "nodes/worker/executing.py",
        r"guard = \[Compare\.created\(claim, ex\.claim_revision\)\]",
        "guard = []",
        (
            f"{CLAIMS}::test_a_worker_whose_claim_was_taken_away_commits_nothing",
            f"{CLAIMS}::test_completion_after_the_claim_is_gone_leaves_the_record_alone",
        ),
        "only the current claim finishes a run: the completion compares the claim",
    ),
    Mutation(
        "finishing-bound-now",
        "nodes/worker/holding.py",
        r"full = len\(self\.finishing\) >= self\.capacity \+ self\.max_armed",
        "full = False",
        ("tests/unit/test_finishing_bound.py::test_finishing_runs_are_bounded_too",),
        "runs whose process ended and whose end is not written yet are at most "
        "capacity + max_armed many before the node claims runs due now again",
    ),
    Mutation(
        "claim-lease",
        "nodes/worker/claiming.py",
        r"(Op\.put\(\s*self\.keys\.claim\(run\.id\),\s*dumps\(.*?\),\s*)lease(,?\s*\))",
        r"\g<1>0\g<2>",
        (f"{CLAIMS}::test_the_claim_and_slot_vanish_with_the_workers_lease",),
        "a claim dies with its worker: it is bound to the worker's lease",
    ),
    Mutation(
        "claim-control-absent",
        "nodes/worker/claiming.py",
        r"(Compare\.modified\(key, kv\.mod_revision\)), Compare\.absent\(control\)\]",
        r"\1]",
        (f"{CLAIMS}::test_a_run_cancelled_while_its_claim_is_in_flight_never_starts",),
        "a run cancelled while queued never starts: the claim compares its control key absent",
    ),
    Mutation(
        "slot-lease",
        "nodes/worker/claiming.py",
        r"Op\.put\(slot, run\.id, lease\)",
        "Op.put(slot, run.id)",
        (f"{CLAIMS}::test_the_claim_and_slot_vanish_with_the_workers_lease",),
        "a slot of a limited job dies with its worker",
    ),
    Mutation(
        "slot-absent",
        "nodes/worker/claiming.py",
        r"compares\.append\(Compare\.absent\(slot\)\)",
        "pass",
        (f"{CLAIMS}::test_two_workers_that_picked_the_same_free_slot_never_both_run",),
        "max_parallel holds: a claim compares its slot key absent",
    ),
    # -- the leader's fencing --------------------------------------------------------------------
    Mutation(
        "fence-tick-single",
        "nodes/leader/tickwrite.py",
        r"compares\[:0\] = \[self\.lead\.fence\(\), self\.rules\.guard\(\)\]",
        "compares[:0] = [self.rules.guard()]",
        (
            f"{FENCING}::test_a_deposed_leader_fires_no_single_tick",
            "tests/integration/test_coordination.py::test_deposed_leader_cannot_create_runs",
        ),
        "a deposed leader fires nothing (one job's tick write)",
    ),
    Mutation(
        "fence-tick-batched",
        "nodes/leader/tickwrite.py",
        r"compares: list\[Any\] = \[self\.lead\.fence\(\), self\.rules\.guard\(\)\]",
        "compares: list[Any] = [self.rules.guard()]",
        (f"{FENCING}::test_a_deposed_leader_fires_no_tick_of_jobs_due_together",),
        "a deposed leader fires nothing (jobs due together, one transaction)",
    ),
    Mutation(
        "fence-lost-run",
        "nodes/leader/reaper.py",
        r"\[\s*self\.lead\.fence\(\),\s*(Compare\.absent\(claim\),)",
        r"[\1",
        (f"{FENCING}::test_a_deposed_leader_records_no_run_as_lost",),
        "a deposed leader declares no run lost (and retries none)",
    ),
    Mutation(
        "fence-prune-runs",
        "nodes/leader/retention.py",
        r"etcd\.txn\(\[lead\.fence\(\)\], batch",
        "etcd.txn([], batch",
        (f"{FENCING}::test_a_deposed_leader_prunes_no_run",),
        "a deposed leader deletes no run record",
        2,
    ),
    Mutation(
        "fence-workflow-advance",
        "nodes/leader/workflows.py",
        r"compares = \[self\.lead\.fence\(\), (Compare\.modified\(key, rev\))\]",
        r"compares = [\1]",
        (f"{FENCING}::test_a_deposed_leader_advances_no_workflow_execution",),
        "a deposed leader starts no workflow task",
    ),
    Mutation(
        "fence-workflow-tick",
        "nodes/leader/wftick.py",
        r"self\.lead\.fence\(\),\s*(Compare\.modified\(state_key, rev\),)",
        r"\1",
        (f"{FENCING}::test_a_deposed_leader_fires_no_workflow_tick",),
        "a deposed leader fires no workflow tick",
    ),
    Mutation(
        "workflow-tick-doc-unchanged",
        "nodes/leader/wftick.py",
        r"Compare\.modified\(doc_key, doc\.mod_revision\),",
        "",
        (
            "tests/integration/test_workflow_tick_order.py::"
            "test_a_workflow_disabled_between_the_ticks_read_and_write_is_not_fired",
        ),
        "a workflow tick commits only on the document it was planned from (D372)",
    ),
    Mutation(
        "fence-waiting-slot",
        "nodes/leader/depwait_look.py",
        r"\[self\.lead\.fence\(\), (Compare\.modified\(w\.key, w\.rev\))",
        r"[\1",
        (
            "tests/integration/test_depends_fencing.py::"
            "test_a_deposed_leader_releases_no_waiting_slot_and_a_stale_look_none_twice",
        ),
        "a deposed leader releases no slot waiting on upstreams (D294)",
    ),
    Mutation(
        "workflow-delete-waitings",
        "cluster/workflow_store.py",
        r"\n *Op\.delete\(self\.keys\.waitings\(project, f\"@\{name\}\"\), prefix=True\),[^\n]*",
        "",
        (
            "tests/security/test_depends_deleted_workflow.py::"
            "test_a_deleted_workflow_leaves_no_held_slot_to_release_its_old_tasks",
        ),
        "a deleted workflow's held slot cannot release its old definition (D330)",
    ),
    Mutation(
        "waiter-pace",
        "nodes/leader/depwait.py",
        r"return now if last is None else max\(now, last \+ self\.pace\(\)\)",
        "return now",
        (
            "tests/unit/test_depwait_index.py::"
            "test_a_busy_upstream_makes_each_waiter_look_at_most_once_per_pace",
        ),
        "a busy upstream makes each waiter look at most once per pace (D331)",
    ),
    Mutation(
        "release-fresh-snapshot",
        "nodes/leader/depwait_look.py",
        r"run = remint\(self\.store\.new_run, job, spec, minted\)",
        "run = minted",
        (
            "tests/integration/test_depends_stranded.py::"
            "test_a_slot_released_after_an_edit_runs_the_job_as_it_is_now",
        ),
        "a released slot runs its job as it is at release (D334)",
    ),
    Mutation(
        "rules-marker-guard",
        "nodes/leader/rulecache.py",
        r"return Compare\.modified\(self\.keys\.rules_marker\(\), self\.marker_rev\)",
        'return Compare.absent(self.keys.rules_marker() + "-never")',
        (
            "tests/integration/test_calendars.py::"
            "test_freeze_skips_job_and_workflow_slots_and_unfreeze_resumes[late]",
        ),
        "no tick commits on calendars, windows or a freeze older than the last change (D339)",
    ),
    Mutation(
        "paged-read-revision",
        "cluster/etcd/client.py",
        r"revision = revision or res\.revision",
        "revision = res.revision",
        (
            "tests/integration/test_range_pages.py::"
            "test_pages_keep_the_first_revision_and_a_watch_from_it_sees_later_writes",
        ),
        "a paged read is one snapshot, and a watch from its revision misses no later write",
    ),
    Mutation(
        "budget-docs-guard",
        "nodes/worker/budgets.py",
        r"return Compare\.unchanged_since\(\s*self\.keys\.budgets\(\), self\.docs_revision if seen "
        r"is None else seen\s*\)",
        'return Compare.absent(self.keys.budgets() + "-never")',
        (
            "tests/integration/test_budget_ordering.py::"
            "test_a_budget_created_before_the_runs_holds_them_on_a_worker_that_has_not_heard",
            "tests/integration/test_budget_ordering.py::"
            "test_a_budget_named_by_a_job_written_after_it_holds_the_jobs_runs",
        ),
        "a run queued after a budget was written is claimed within it, on any worker (D365)",
    ),
    Mutation(
        "release-job-unchanged",
        "nodes/leader/slotdoc.py",
        r"same = Compare\.modified\(key, kv\.mod_revision if kv is not None else 0\)",
        'same = Compare.absent(key + "-never")',
        (
            "tests/integration/test_release_reads_job.py::"
            "test_an_edit_between_the_read_and_the_release_refuses_the_release",
        ),
        "a waiting slot is released under its job as it is at release (D366)",
    ),
    Mutation(
        "tick-job-unchanged",
        "nodes/leader/tickwrite.py",
        r"compares\.append\(Compare\.modified\(job_key, entry\.job_rev\)\)",
        "pass",
        (
            "tests/integration/test_tick_job_order.py::"
            "test_a_job_disabled_before_its_tick_is_not_fired_by_a_stale_leader",
            "tests/integration/test_tick_job_order.py::"
            "test_jobs_due_together_on_a_stale_cache_fire_only_the_enabled_one",
        ),
        "a job disabled before its tick is not fired by a leader whose job watch is behind (D369)",
    ),
    Mutation(
        "overlap-active-present",
        "nodes/leader/jobcache.py",
        r"present = \[Compare\.exists\(self\.keys\.active\(\*jk, r\)\) for r in sorted\(ids\)\]",
        "present: list[Any] = []",
        (
            "tests/integration/test_overlap_order.py::"
            "test_a_run_that_ended_unseen_does_not_skip_the_next_tick",
        ),
        "a forbid tick is not skipped for a run that had ended (D370)",
    ),
    Mutation(
        "overlap-active-unchanged",
        "nodes/leader/jobcache.py",
        r"Compare\.unchanged_since\(self\.keys\.actives\(\*jk\), since\)",
        'Compare.absent(self.keys.actives(*jk) + "-never")',
        (
            "tests/integration/test_overlap_order.py::"
            "test_a_manual_run_created_unseen_makes_the_tick_skip",
            "tests/integration/test_overlap_order.py::"
            "test_forbid_jobs_due_together_are_written_one_by_one_under_the_guard",
        ),
        "a forbid tick is skipped for a run created before it, seen or not (D370)",
    ),
    Mutation(
        "webhook-allowlist-fresh",
        "nodes/webhooks.py",
        r"if not force and rev == self\._rev and time\.monotonic\(\)",
        "if not force and time.monotonic()",
        (
            "tests/security/test_webhook_allowlist_order.py::"
            "test_a_removed_allow_list_entry_is_refused_at_the_next_send",
        ),
        "an allow-list entry removed is refused from the next webhook send on (D371)",
    ),
    Mutation(
        "watch-resume-last-event",
        "cluster/etcd/client.py",
        r"last = events\[-1\]\.kv\.mod_revision if events else int\(resp\.header\.revision\)",
        "last = int(resp.header.revision)",
        (
            "tests/integration/test_watch_position.py::"
            "test_a_broken_watch_resumes_after_the_last_event_and_loses_none",
        ),
        "a broken watch resumes after its last event, skipping none (D364)",
    ),
    Mutation(
        "fence-notifier-cursor",
        "nodes/leader/notifier.py",
        r"\[self\.lead\.fence\(\)\],(\s*\[Op\.put\(self\.keys\.notifier_cursor\(\))",
        r"[],\1",
        (f"{FENCING}::test_a_deposed_leader_saves_no_notifier_cursor",),
        "a deposed leader's notifier moves no cursor (no notification skipped)",
    ),
    Mutation(
        "notifier-cache-current",
        "nodes/leader/notifier.py",
        r"return entry is not None and entry\.job_rev >= edited",
        "return entry is not None",
        (f"{ADDED_RULE}::test_a_webhook_added_just_before_a_run_ended_is_sent_the_run",),
        "a rule added before a run ended is used: the job cache decides only once it holds "
        "the job's last edit before the end (D410)",
    ),
    Mutation(
        "notifier-defaults-current",
        "nodes/leader/notifier.py",
        r"return kept is not None and kept\[2\] >= edited",
        "return kept is not None",
        (f"{ADDED_RULE}::test_a_project_default_added_just_before_a_run_ended_is_sent_the_run",),
        "a project default added before a run ended is used: the defaults kept decide only "
        "once they hold its last edit before the end (D413)",
    ),
    Mutation(
        "notifier-watch-jobs",
        "nodes/leader/notifier.py",
        r"\s*end=prefix_end\(defaults\)\.decode\(\),",
        "",
        (
            f"{ADDED_RULE}::test_a_webhook_added_just_before_a_run_ended_is_sent_the_run",
            f"{ADDED_RULE}::test_a_project_default_added_just_before_a_run_ended_is_sent_the_run",
        ),
        "the notifier's watch carries the job and defaults edits in the run index's order (D410)",
    ),
    # -- once per tick, once per task ------------------------------------------------------------
    Mutation(
        "tick-idempotency-key",
        "nodes/leader/tickwrite.py",
        r"compares\.append\(Compare\.absent\(tick_key\)\)",
        "pass",
        (f"{FENCING}::test_a_tick_a_backfill_already_ran_gets_no_second_run",),
        "one run per tick: the tick's key is created once",
    ),
    Mutation(
        "deferred-run-once",
        "cluster/tickplan.py",
        r"if is_deferred:\n(\s+)deferred_to = None\n\s+source = \"schedule\"",
        'if is_deferred:\\n\\1source = "schedule"',
        ("tests/unit/test_tickplan_rules.py::test_defer_window_gives_one_run_at_its_end",),
        "a deferred slot gives one run: the deferral is cleared in the run's transaction",
    ),
    Mutation(
        "on-time-ticks-fire",
        "cluster/plan.py",
        r"fire = on_time or \(",
        "fire = (",
        (
            "tests/unit/test_tickplan.py::test_a_leader_busy_past_a_period_misses_no_on_time_tick",
            "tests/unit/test_plan.py::test_every_on_time_tick_fires_whatever_the_policy",
        ),
        "a tick within the on-time grace fires whatever the catch-up policy (D374)",
    ),
    Mutation(
        "calendar-reference",
        "cluster/calendar_store.py",
        r"if name not in guards:",
        "if False:",
        ("tests/integration/test_calendars.py::test_calendar_and_window_api",),
        "a schedule names only calendars that exist (400 naming the reference)",
    ),
    Mutation(
        "workflow-advance-revision",
        "nodes/leader/workflows.py",
        r"compares = \[self\.lead\.fence\(\), Compare\.modified\(key, rev\)\]",
        "compares = [self.lead.fence()]",
        (f"{FENCING}::test_two_leaders_with_stale_views_start_each_task_once",),
        "a task run is created once: advancing compares the execution's revision",
    ),
    Mutation(
        "session-local-deadline",
        "cluster/session.py",
        r"if self\.remaining\(\) <= self\.margin:",
        "if False:",
        (
            "tests/integration/test_coordination.py::"
            "test_a_node_cut_off_from_etcd_gives_its_lease_up_before_etcd_expires_it",
        ),
        "a node gives its work up before etcd can expire its lease and hand the work on",
    ),
    Mutation(
        "txn-maybe-sent",
        "cluster/etcd/client.py",
        r"\s*and not any\(word in low for word in _MAYBE_SENT\)",
        "",
        (
            "tests/unit/test_etcd_members.py::"
            "test_a_write_is_never_sent_only_when_no_connection_ever_carried_it",
        ),
        "a write whose connection closed after sending is an unknown outcome (read back)",
    ),
    Mutation(
        "election-predecessor",
        "cluster/election.py",
        r"if not pred\.kvs:",
        "if True:",
        ("tests/integration/test_coordination.py::test_election_order_and_resign_hand_off",),
        "one leader at a time: a candidate waits for its predecessor",
    ),
    # -- sharded scheduling (D300, D301) ---------------------------------------------------------
    Mutation(
        "shard-fires-own-jobs",
        "nodes/leader/jobcache.py",
        r"return self\.shard\.owns\(\*jk\)",
        "return True",
        (f"{SHARDS}::test_each_shard_scheduler_fires_only_its_own_jobs",),
        "a shard leader fires its own shard's jobs only",
    ),
    Mutation(
        "shard-change-deposes",
        "cluster/shard_store.py",
        r"ops \+= \[Op\.delete\(p, prefix=True\) for p in keys\.shard_elections\(\)\]",
        "pass",
        (f"{SHARDS}::test_changing_k_deposes_every_shard_leader_and_refuses_stale_candidacies",),
        "a change of scheduler_shards deposes every leader of the old split in the same write",
    ),
    Mutation(
        "shard-candidacy-guard",
        "cluster/election.py",
        r"\[Compare\.absent\(self\.key\), \*guard\]",
        "[Compare.absent(self.key)]",
        (f"{SHARDS}::test_changing_k_deposes_every_shard_leader_and_refuses_stale_candidacies",),
        "no candidacy under a shard count that has changed since its node read it",
    ),
    Mutation(
        "shared-watch-since",
        "nodes/leader/feed.py",
        r"if ev\.kv\.mod_revision > self\.since:",
        "if True:",
        ("tests/integration/test_shared_watch.py::test_a_hand_over_loses_no_event",),
        "a shard leader on a node's shared watch applies nothing its own read already holds (D356)",
    ),
    Mutation(
        "shared-watch-routing",
        "nodes/leader/feed.py",
        r"for sub in of_count\.get\(h % count, \(\)\):",
        "for sub in (s for subs in of_count.values() for s in subs):",
        (
            "tests/integration/test_shared_watch.py::"
            "test_a_key_of_shard_i_reaches_only_shard_is_leader_and_is_decoded_once",
        ),
        "a key of shard i reaches only shard i's leader on the node (D356)",
    ),
    Mutation(
        "shared-load-keeps-all",
        "nodes/leader/sharedload.py",
        r"if \(every and s\.keeps_all\) or s\.shard\.owns_hash\(h\)\]",
        "if s.shard.owns_hash(h)]",
        (
            "tests/integration/test_shared_load.py::"
            "test_shards_won_together_read_the_jobs_once_and_each_keeps_its_own",
        ),
        "shard 0's cache gets every job from the read its node's shards share (D432)",
    ),
    Mutation(
        "handover-current-lease",
        "cluster/shards.py",
        r"return \[node for node, lease in queued if lease_of\.get\(node\) == lease\]",
        "return [node for node, lease in queued]",
        (
            "tests/integration/test_handover_view.py::"
            "test_a_current_candidacy_is_handed_the_shard_and_a_dead_one_never",
        ),
        "a shard is never handed to a candidacy its node's restart left behind (D304, D393)",
    ),
    Mutation(
        "queue-parking",
        "nodes/worker/queueorder.py",
        r"if key in candidates and key not in parked:",
        "if key in candidates:",
        (
            "tests/security/test_queue_walk.py::"
            "test_a_run_no_node_may_take_is_looked_at_once_per_view_and_runs_when_one_comes",
        ),
        "a worker looks at a run it may not take once per view version, not at every dispatch",
    ),
    Mutation(
        "snapshot-cache-exact-content",
        "cluster/runcodec.py",
        r"key = marshal\.dumps\(value, 2\)",
        'key = marshal.dumps(value.get("name"), 2)',
        (
            "tests/unit/test_run_codec.py::test_varied_records_decode_to_the_same_runs_on_every_path",
            "tests/unit/test_run_codec.py::test_json_types_and_key_order_are_never_confused",
        ),
        "a run's snapshot is taken from the cache only for the exact content it was validated "
        "from (D450)",
    ),
    # -- secrets (issue 18: masking) -------------------------------------------------------------
    Mutation(
        "masking-split-holdback",
        "cluster/masking.py",
        r"cut = len\(buf\) - self\._tail\(buf\)",
        "cut = len(buf)",
        ("tests/unit/test_secrets.py::test_every_single_split_point",),
        "a secret split across output chunks is still masked (the masker holds its prefix back)",
    ),
    Mutation(
        "masking-output-wiring",
        "nodes/worker/executing.py",
        r"on_output = masked\.write",
        "on_output = writer.write",
        (
            "tests/security/test_secrets.py::"
            "test_workflow_tasks_and_binary_values_are_injected_and_masked",
        ),
        "a job's output is masked before it reaches the spool",
    ),
    Mutation(
        "masking-result",
        "nodes/worker/executing.py",
        r"result = mask_result\(result, list\(secrets\.values\(\)\)\)",
        "pass",
        (
            "tests/security/test_secrets.py::"
            "test_a_job_printing_its_secret_byte_by_byte_shows_only_masks",
            "tests/security/test_secrets.py::"
            "test_workflow_tasks_and_binary_values_are_injected_and_masked",
        ),
        "a job's result file is masked before it is stored in the run record",
    ),
    # -- containment (D150-D152) -------------------------------------------------------------------
    Mutation(
        "cgroup-kill",
        "nodes/executor/cgroup_kill.py",
        r'_write\(os\.path\.join\(path, "cgroup\.kill"\), "1"\)',
        "pass",
        ("tests/unit/test_cgroups.py::test_setsid_and_double_fork_do_not_escape_a_kill[auto]",),
        "a kill reaches every process of a run, also one that called setsid()",
    ),
    Mutation(
        "cgroup-pool-empty",
        "nodes/executor/cgroup_pool.py",
        r"empty = self\.size > 0 and cg\.empty\(\)",
        "empty = self.size > 0",
        (f"{REUSE}::test_a_process_left_in_a_cgroup_is_killed_and_the_cgroup_is_not_reused[auto]",),
        "a run never shares a cgroup with a process of an earlier run (D340)",
    ),
    Mutation(
        "cgroup-pool-counters",
        "nodes/executor/cgroup_pool.py",
        r"cg\.begin\(\)",
        "pass",
        (f"{REUSE}::test_a_reused_cgroup_carries_no_limit_and_no_usage_of_its_previous_run[auto]",),
        "a reused cgroup's usage is the new run's own (D340)",
    ),
    Mutation(
        "rundir-reuse-empty",
        "nodes/executor/spare_dirs.py",
        r"if next\(entries, None\) is not None:",
        "if False:",
        (f"{RUNDIR}::test_a_folder_with_anything_left_in_it_is_not_kept",),
        "a run's folder is kept for the next run only when the job left it empty (D423)",
    ),
    Mutation(
        "rundir-reuse-owner",
        "nodes/executor/spare_dirs.py",
        r"os\.chown\(path, os\.geteuid\(\), os\.getegid\(\)\)",
        "pass",
        (f"{RUNDIR}::test_a_process_still_holding_the_folder_cannot_add_to_it",),
        "nothing of a run's user reaches a kept folder once it is given back (D423)",
    ),
    Mutation(
        "finishing-bound",
        "nodes/worker/holding.py",
        r"if len\(self\.finishing\) >= self\.capacity \+ self\.max_armed:",
        "if False:",
        (
            "tests/integration/test_finishing_side.py::test_completions_that_lag_stop_the_claims_ahead",
        ),
        "what a node holds stays bounded while its completions lag (D467, D459: armed and held)",
        count=2,
    ),
    Mutation(
        "txnbatch-key-in-flight",
        "cluster/txnbatch.py",
        r"fits = fits and \(item\.keys is None or self\._flying\.keys\(\)\.isdisjoint\(item\.keys\)\)",
        "pass",
        (
            "tests/integration/test_txnbatch.py::test_a_key_written_by_a_batch_in_flight_waits_for_it",
        ),
        "writes of one key in the group commit are applied in the order submitted (D466)",
    ),
    Mutation(
        "fence-end-of-file",
        "nodes/executor/fence.py",
        r"if not data:\n(\s*)_kill\(layout, sessions\)\n\s*if layout\.enabled:",
        r"if not data:\n\1if False:",
        (
            "tests/security/test_containment.py::test_sigkilled_node_leaves_no_job_process[auto]",
            "tests/security/test_containment.py::test_sigkilled_node_leaves_no_job_process[off]",
        ),
        "no run outlives its node: the fence kills the runs when the node's pipe closes",
    ),
    Mutation(
        "fence-lease-deadline",
        "nodes/executor/containment.py",
        r"self\._deadline = deadline\n\s*self\._send\(self\._deadline_line\(\)\)",
        "self._deadline = deadline",
        (
            "tests/security/test_containment.py::"
            "test_frozen_node_kills_its_job_before_its_lease_expires[auto]",
        ),
        "a frozen node's runs die before its lease can expire (self-fencing)",
    ),
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
    # -- budgets (D275) --------------------------------------------------------------------------
    Mutation(
        "fenced-completion-frees-slots",
        "nodes/worker/executing.py",
        r"\(guard, ops, free, linger=linger\)",
        "(guard, ops, linger=linger)",
        (f"{FENCED_SLOTS}::test_a_fenced_completion_frees_its_budget_and_job_slots",),
        "a completion fenced because its claim was taken frees the slots its claim took",
    ),
    Mutation(
        "fenced-slot-release-compared",
        "cluster/etcd/builders.py",
        r"cls\.nested\(\[Compare\.created\(key, revision\)\], \[cls\.delete\(key\)\]\)",
        "cls.nested([], [cls.delete(key)])",
        (f"{FENCED_SLOTS}::test_a_fenced_completion_leaves_a_slot_someone_took_since",),
        "a fenced completion never frees a slot someone else took since",
    ),
    Mutation(
        "budget-slot-absent",
        "nodes/worker/budgets.py",
        r"plan\.compares\.append\(Compare\.absent\(slot\)\)",
        "pass",
        (f"{BUDGETS}::test_two_workers_that_picked_the_same_budget_slot_never_both_run",),
        "a budget's concurrent limit holds: a claim compares its slot key absent",
    ),
    Mutation(
        "budget-starts-revision",
        "nodes/worker/budgets.py",
        r"plan\.compares\.append\(Compare\.modified\(starts, window_rev\)\)",
        "pass",
        (f"{BUDGETS}::test_two_workers_that_read_the_same_start_window_never_both_start",),
        "a budget's starts per window hold: a claim compares the window's revision",
    ),
    Mutation(
        "budget-docs-seen",
        "nodes/worker/claiming.py",
        r"self\.budgets\.guard\(docs_seen\)",
        "self.budgets.guard()",
        (
            "tests/integration/test_budget_ordering.py::"
            "test_a_budget_heard_of_between_the_look_and_the_claim_holds_the_run",
        ),
        "a claim compares the budget documents as its decision read them (D469)",
    ),
    Mutation(
        "claim-admin-state",
        "nodes/worker/claiming.py",
        r"compares\.append\(Compare\.modified\(self\.keys\.node_state\(self\.node_id\), state_seen\)\)",
        "pass",
        (
            f"{ADMIN_STATE}::test_a_drain_heard_between_the_decision_and_the_claim_refuses_the_claim",
        ),
        "a drained or disabled node claims nothing: the claim compares its admin state",
    ),
    Mutation(
        "claim-admin-state-seen",
        "nodes/worker/worker.py",
        r"seen = self\.view\.own_state\(\)\[1\] if self\.view is not None else None",
        "seen = None",
        (
            f"{ADMIN_STATE}::test_a_drain_heard_between_the_decision_and_the_claim_refuses_the_claim",
        ),
        "a claim compares the admin state its decision saw, not the view's later one (D470)",
    ),
    Mutation(
        "budget-start-instant",
        "nodes/worker/claiming.py",
        r"start = budget\.at\b",
        "start = start",
        (f"{BUDGETS}::test_a_start_decided_before_its_window_ended_is_recorded_in_that_window",),
        "a run's recorded start is in the window its claim counted (D468)",
    ),
    Mutation(
        "budget-never-ahead",
        "nodes/worker/worker.py",
        r"if ahead and self\.budgets\.counts_starts\(run\):",
        "if False:",
        (f"{BUDGETS}::test_a_run_due_in_the_next_window_is_not_claimed_ahead_into_this_one",),
        "a run joining a start-window budget is counted in the window it starts in (D468)",
    ),
    Mutation(
        "budget-slot-lease",
        "nodes/worker/budgets.py",
        r"Op\.put\(slot, run_id, lease\)",
        "Op.put(slot, run_id)",
        (f"{BUDGETS}::test_a_budget_slot_vanishes_with_the_workers_lease",),
        "a budget slot dies with its worker: it is bound to the worker's lease",
    ),
    Mutation(
        "budget-slot-release",
        "nodes/worker/executing.py",
        r"slot=ex\.slots,",
        "slot=ex.slot,",
        (f"{BUDGETS}::test_two_workers_that_picked_the_same_budget_slot_never_both_run",),
        "a budget slot is given back when its run ends",
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
    # -- the leader's own claims (D444) --------------------------------------------------------
    Mutation(
        "own-claim-admin-state",
        "nodes/worker/ownclaims.py",
        r"Compare\.modified\(w\.keys\.node_state\(w\.node_id\), view\.own_state\(\)\[1\]\),",
        "",
        (f"{OWN}::test_a_drained_node_whose_view_has_not_heard_queues_the_tick_instead",),
        "a node drained or disabled (answered) claims no run in its leader's creation, even "
        "before its view hears of it",
    ),
    Mutation(
        "own-claim-grant-guards",
        "nodes/worker/ownclaims.py",
        r"\*w\._grant_guards\(run, chosen\),",
        "",
        (
            "tests/security/test_own_claim_grants.py::"
            "test_a_revoked_grant_stops_the_leaders_own_claim_its_view_has_not_heard_of",
        ),
        "a grant revoked (answered) stops the leader's own claims through it, even before its "
        "node's view hears of it",
    ),
    Mutation(
        "own-claim-lease",
        "nodes/worker/ownclaims.py",
        r"Op\.put\(keys\.claim\(run\.id\), dumps\(claim\), w\.session\.lease_id\)",
        "Op.put(keys.claim(run.id), dumps(claim))",
        (f"{OWN}::test_a_creation_claims_the_run_bound_to_the_lease_without_a_queue_entry",),
        "a run the leader claims in its creation dies with its node: the claim is bound to the "
        "node's lease",
    ),
    Mutation(
        "own-claim-armed-reservation",
        "nodes/worker/ownclaims.py",
        r"elif ahead:\n\s*w\._claiming_ahead\.add\(key\)",
        "elif ahead:\n            pass",
        (f"{OWN}::test_creations_hold_no_more_ahead_than_max_armed_and_queue_the_rest[armed]",),
        "the leader's creations hold no more runs ahead than max_armed: each reserves its place "
        "before the write",
    ),
    Mutation(
        "own-claim-held-reservation",
        "nodes/worker/ownclaims.py",
        r"if held:  # counted apart from the armed runs until its arming \(D456\)\n"
        r"\s*w\._claiming_held\.add\(key\)",
        "if held:\n            pass",
        (f"{OWN}::test_creations_hold_no_more_ahead_than_max_armed_and_queue_the_rest[held]",),
        "the leader's creations hold no more own claims before their arming than max_armed: "
        "each reserves its held place before the write (D456)",
    ),
    Mutation(
        "own-claim-held-bound",
        "cluster/ownclaim.py",
        r"return best if room\.held < room\.max_armed else None",
        "return best",
        (
            f"{OWN}::test_creations_hold_no_more_ahead_than_max_armed_and_queue_the_rest[held]",
            f"{OWN}::test_held_claims_get_their_process_at_their_arming_and_run_once",
        ),
        "a node holds at most max_armed own claims before their arming, apart from the "
        "max_armed armed processes; the runs beyond go through the queue (D456)",
    ),
    Mutation(
        "own-claim-held-no-process",
        "nodes/worker/ownclaims.py",
        r"w\._start\(r\.started, revision, None, r\.cost, held=r\.held\)",
        "w._start(r.started, revision, None, r.cost)",
        (
            f"{OWN}::test_a_creation_claims_the_run_bound_to_the_lease_without_a_queue_entry",
            f"{OWN}::test_held_claims_get_their_process_at_their_arming_and_run_once",
        ),
        "an own claim made more than the claim-ahead before its instant has no process (no "
        "environment, no secrets) until then, and is not counted armed before (D456)",
    ),
    Mutation(
        "own-claim-held-arm-room",
        "nodes/worker/seating.py",
        r"if not self\._to_arm and self\.room\(\):",
        "if True:",
        (f"{HELD}::test_with_no_armed_place_it_stays_held_until_its_instant",),
        "a held own claim is armed only within max_armed: with no armed place it has no process "
        "before its instant (D456, D457)",
    ),
    Mutation(
        "own-claim-budget-guard",
        "nodes/worker/ownclaims.py",
        r"w\.budgets\.guard\(\),  # no budget newer than the cache \(D365\)",
        "",
        (f"{RACES}::test_a_budget_the_cache_has_not_heard_of_queues_the_run",),
        "a budget written (answered) before a creation keeps the leader from claiming its runs "
        "outside it, even before its node's budget cache hears of it",
    ),
    Mutation(
        "own-claim-slot-limited",
        "nodes/worker/ownclaims.py",
        r"limited=slot_limit\(spec\.overlap, spec\.max_parallel\) > 0,",
        "limited=False,",
        (
            f"{RACES}::test_a_job_slot_queues_the_run_and_its_claim_takes_the_slot[limit0]",
            f"{RACES}::test_a_job_slot_queues_the_run_and_its_claim_takes_the_slot[limit1]",
        ),
        "a run of a job with a slot (overlap forbid, max_parallel) is never claimed in its "
        "creation: it goes through the queue, and its claim takes the slot",
    ),
    Mutation(
        "own-claim-run-as-node",
        "nodes/worker/ownclaims.py",
        r"if decide\(user, group, w\.run_as\)\.refusal is not None:\n\s*return None",
        "pass",
        (f"{RUN_AS}::test_a_run_as_user_refused_queues_the_run[node]",),
        "the leader never claims in its creation a run as a user its node's policy refuses",
    ),
    Mutation(
        "own-claim-run-as-project",
        "nodes/worker/ownclaims.py",
        r"if user not in view\.project_users\.get\(run\.project, \(\)\):\n\s*return None",
        "pass",
        (f"{RUN_AS}::test_a_run_as_user_refused_queues_the_run[project]",),
        "the leader never claims in its creation a run as a user its project does not grant",
    ),
    Mutation(
        "own-claim-unknown-wakes",
        "nodes/leader/ownruns.py",
        r"own\.unknown\(r\)  # a lost reply",
        "own.release(r)  # a lost reply",
        (
            f"{LOST}::test_a_lost_reply_wakes_the_orphan_check_which_adopts_before_the_instant",
            f"{LOST}::test_a_shared_batch_whose_reply_is_lost_ends_its_reservations_and_is_adopted",
        ),
        "a creation whose reply is lost wakes the orphan check: a run it claimed is adopted "
        "before its instant, not at the next periodic check",
    ),
    Mutation(
        "own-claim-chunk-settle",
        "nodes/leader/tickwrite.py",
        r"settle\(self\.own, \(plan\.own for plan in chunk\), None, exc if sent else None\)",
        "pass",
        (f"{LOST}::test_a_shared_batch_whose_reply_is_lost_ends_its_reservations_and_is_adopted",),
        "a shared creation that fails ends its own claims' reservations at once (and a lost "
        "reply wakes the orphan check)",
    ),
)


def by_name(names: list[str]) -> list[Mutation]:
    known = {m.name: m for m in MUTATIONS}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"unknown mutation(s): {', '.join(unknown)}; see --list")
    return [known[n] for n in names] if names else list(MUTATIONS)


def mutate(m: Mutation, text: str) -> str:
    """``text`` with the mutation applied; PatternGone unless it matches ``count`` times."""
    found = len(re.findall(m.pattern, text, flags=re.S))
    if found != m.count:
        raise PatternGone(
            f"{m.name}: the pattern matches {found} time(s) in {m.file}, expected {m.count}; "
            "the code changed: update this entry of tests/mutations/__init__.py"
        )
    return re.sub(m.pattern, m.replacement, text, flags=re.S)


def check_patterns(mutations: list[Mutation], root: Path = ROOT) -> list[str]:
    """Problems with the entries themselves (pattern gone, mutation a no-op, tests missing)."""
    problems = []
    for m in mutations:
        text = (root / m.file).read_text()
        try:
            if mutate(m, text) == text:
                problems.append(f"{m.name}: the replacement changes nothing")
        except PatternGone as exc:
            problems.append(str(exc))
        for test in m.tests:
            path, _, func = test.partition("::")
            target = root / path
            if not target.exists() or f"def {func.split('[')[0]}(" not in target.read_text():
                problems.append(f"{m.name}: catching test {test} not found")
    return problems


def mutated_copy(m: Mutation, dest: Path, root: Path = ROOT) -> Path:
    """A copy of the code under ``dest`` with ``m`` applied.

    The bytecode caches come along (D327): every mutant's pytest and the node processes it
    starts would otherwise compile the whole code base again. A cached ``.pyc`` is used only
    while it matches its source's mtime and size (``copy2`` keeps both), and the mutated file's
    own is removed, so the mutant is always compiled from the mutated source."""
    ignore = shutil.ignore_patterns(".pytest_cache", "node_modules")
    for name in COPIED:
        src = root / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=ignore, symlinks=True)
        elif src.exists():
            shutil.copy2(src, dest / name)
    target = dest / m.file
    target.write_text(mutate(m, target.read_text()))
    for cached in (target.parent / "__pycache__").glob(f"{target.stem}.*.pyc"):
        cached.unlink()
    return dest
