"""Where a node's CPU goes, from a profile written by ``bench.run --profile``.

    python -m bench.profsummary bench/results/lag_100.prof

Prints the cumulative share of the profiled time of the node's main code paths. Coroutines count
only while they run (an ``await`` on another task is not included), so the paths below hardly
overlap, except where a line says it is part of another one. cProfile inflates Python code more
than C calls: read shares, not milliseconds.
"""

from __future__ import annotations

import pstats
import sys

# (file suffix, function, label); indented labels are part of the line above them.
PATHS: list[tuple[str, str, str]] = [
    ("scheduler.py", "_fire_guarded", "leader: fire ticks (plan, build runs, fenced txn)"),
    ("cluster/runs.py", "new_run", "  build the Run (Job.spec() re-validation)"),
    ("leader/tickwrite.py", "_write", "  the creation txn"),
    ("leader/reaper.py", "_check_lost_task", "leader: lost-run check after a claim disappears"),
    ("cluster/watch.py", "follow", "leader: watch events (jobs, states, actives, claims)"),
    ("worker/worker.py", "_follow", "worker: watch events (queue, controls)"),
    ("worker/worker.py", "_dispatch_loop", "worker: dispatch (scan candidates, parse runs)"),
    ("worker.py", "eligible", "  selector check per candidate"),
    ("worker/worker.py", "_run_of", "  parse a queued Run"),
    ("worker/claiming.py", "_claim", "worker: claim txn"),
    ("worker/executing.py", "_execute", "worker: execute (spawn, wait, complete)"),
    ("executor/process.py", "start", "  spawn (Process.start -> Popen)"),
    ("worker/executing.py", "_command", "  argv + environment of the job"),
    ("local.py", "writer", "  open the run's log file"),
    ("worker/executing.py", "_complete", "  completion (finish_ops + txn)"),
    ("cluster/runs.py", "finish_ops", "    finish_ops (deep copy of the Run)"),
    ("executor/process.py", "_supervise", "executor: after exit (leftover scan, reap, drain)"),
    ("executor/process.py", "session_members", "  /proc scan for leftover processes"),
    ("worker/claiming.py", "_adopt_orphans", "worker: orphan adoption loop"),
    ("leader/loops.py", "periodic", "leader: reconcile and prune"),
    ("models.py", "_cron", "(across paths) cron re-parsed by ScheduleSpec validation"),
    ("models.py", "_one_action", "(across paths) JobSpec size check (model_dump_json)"),
    ("copy.py", "deepcopy", "(across paths) copy.deepcopy"),
    ("_base.py", "_proxy_to_logger", "(across paths) structlog"),
]


def summarize(path: str) -> list[tuple[str, float, int]]:
    stats = pstats.Stats(path)
    total: float = stats.total_tt  # type: ignore[attr-defined]
    table: dict[tuple[str, int, str], tuple[int, int, float, float, object]]
    table = stats.stats  # type: ignore[attr-defined]
    out = []
    for suffix, func, label in PATHS:
        cum = 0.0
        calls = 0
        for (file, _line, name), (cc, _nc, _tt, ct, _callers) in table.items():
            if name == func and file.endswith(suffix):
                cum = max(cum, ct)  # one definition per name in these files
                calls = cc
        if cum:
            out.append((label, cum / total, calls))
    return out


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    stats = pstats.Stats(sys.argv[1])
    print(f"{sys.argv[1]}: {stats.total_tt:.2f} s profiled")  # type: ignore[attr-defined]
    for label, share, calls in summarize(sys.argv[1]):
        print(f"{share:6.1%}  {label}  ({calls} calls)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
