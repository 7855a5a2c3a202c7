"""Mutations of the leader's own claims (D444): claimed with the tick, held within
``max_armed``, started only as the node and the project allow."""

from __future__ import annotations

from tests.mutations.entry import Mutation

OWN = "tests/integration/test_own_claims.py"
RACES = "tests/integration/test_own_claims_races.py"
LOST = "tests/integration/test_own_claims_lost.py"
RUN_AS = "tests/security/test_own_claim_run_as.py"
HELD = "tests/unit/test_held_claims.py"

MUTATIONS: tuple[Mutation, ...] = (
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
