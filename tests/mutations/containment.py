"""Mutations of a run's process and what it leaves: secrets masked in its output, its cgroup
and folder, the fence that kills it with its node, what a node holds while ends are written."""

from __future__ import annotations

from tests.mutations.entry import Mutation

REUSE = "tests/security/test_cgroup_reuse.py"
RUNDIR = "tests/security/test_run_dir_reuse.py"

MUTATIONS: tuple[Mutation, ...] = (
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
        r"os\.chown\(path, \*self\._owner\)",
        "pass",
        (f"{RUNDIR}::test_a_process_still_holding_the_folder_cannot_add_to_it",),
        "nothing of a run's user reaches a kept folder once it is given back (D423)",
    ),
    Mutation(
        "rundir-reuse-mode",
        "nodes/executor/spare_dirs.py",
        r"if not owned or stat\.S_IMODE\(st\.st_mode\) != 0o700:",
        "if not owned:",
        (f"{RUNDIR}::test_a_folder_already_the_nodes_is_kept_without_a_chown_and_private_again",),
        "a kept folder is 0700 again even when it was the node's already: a run as the node's "
        "user that opened its folder to everyone leaves nothing open to the next (D423, D496)",
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
        r"fits = fits and \(item\.keys is None or self\._flying\.isdisjoint\(item\.keys\)\)",
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
)
