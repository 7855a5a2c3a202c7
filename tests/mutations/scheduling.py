"""Mutations of scheduling: one run per tick and per task, the session's lease and the
election, the shards (D300, D301)."""

from __future__ import annotations

from tests.mutations.entry import Mutation

FENCING = "tests/integration/test_fencing.py"
SHARDS = "tests/integration/test_shard_scheduler.py"

MUTATIONS: tuple[Mutation, ...] = (
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
)
