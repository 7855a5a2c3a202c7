"""Mutations of the leader's writes: a deposed leader writes nothing, and a write commits only
on what it was planned from (the job, the workflow, the notifier's view)."""

from __future__ import annotations

from tests.mutations.entry import Mutation

FENCING = "tests/integration/test_fencing.py"
ADDED_RULE = "tests/integration/test_notify_added_rule_order.py"

MUTATIONS: tuple[Mutation, ...] = (
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
)
