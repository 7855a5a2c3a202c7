"""Mutations of the worker's claims, completions and budgets: a run is claimed and finished
once, within its job's and its project's limits."""

from __future__ import annotations

from tests.mutations.entry import Mutation

CLAIMS = "tests/integration/test_claims.py"
BUDGETS = "tests/integration/test_budget_claims.py"
FENCED_SLOTS = "tests/integration/test_fenced_slots.py"
ADMIN_STATE = "tests/integration/test_claim_admin_state.py"

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
        "seat-before-release",
        "nodes/worker/executing.py",
        r"command, on_output, armed or early",
        "command, on_output, armed",
        (
            "tests/integration/test_seat_after_spawn.py::"
            "test_a_run_due_now_waits_for_its_seat_spawned_and_held",
            "tests/integration/test_seat_after_spawn.py::"
            "test_a_run_cancelled_while_it_waits_for_its_seat_never_runs",
        ),
        "capacity bounds what runs: a run due now spawned before its seat is released only "
        "once seated (D471)",
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
    # -- the queue's parkings (D358), read by both dispatch passes ------------------------------
    Mutation(
        "parking-handoff-ends",
        "nodes/worker/parking.py",
        r"while self\._times and self\._times\[0\]\[0\] <= now:",
        "while False:",
        (
            "tests/unit/test_queue_parking_rules.py::test_parked_until",
            "tests/integration/test_placement.py::"
            "test_a_full_preferred_node_hands_runs_off_after_the_delay",
        ),
        "a run its preferred node does not take is taken by another node once the hand-off delay "
        "has passed: a parking behind the preferred node ends at its time",
    ),
    Mutation(
        "ahead-pass-order",
        "nodes/worker/parking.py",
        r"return sorted\(set\(keys\) - self\.parked\(version, now\)\)",
        "return sorted(set(keys) - self.parked(version, now), reverse=True)",
        (
            "tests/unit/test_queue_parking_rules.py::test_parked_until",
            "tests/integration/test_ahead_order.py::"
            "test_a_full_node_arms_the_higher_priority_run_of_those_due_together",
        ),
        "runs due ahead are armed in queue order (higher priority first, then the oldest, D33)",
    ),
)
