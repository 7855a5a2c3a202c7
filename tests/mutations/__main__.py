"""``python -m tests.mutations``: apply each mutation to a copy, run its tests, report (D175)."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tests.mutations import Mutation, PatternGone, by_name, check_patterns, mutated_copy

# per pytest run of one mutation's tests (its own per-test timeout: 60 s); a loaded CI machine
# (load 15-20) slows a run of node-process tests several times over
TEST_TIMEOUT = 300


@dataclass
class Outcome:
    mutation: Mutation
    verdict: str  # "caught" | "survived" | "error"
    seconds: float
    detail: str = ""


def run_group(
    cmd: list[str], *, cwd: Path, env: dict[str, str], timeout: float
) -> subprocess.CompletedProcess[str]:
    """``subprocess.run`` in a session of its own: at the timeout the whole group is killed (a
    pytest killed alone left the etcd and node processes of its tests running)."""
    with subprocess.Popen(
        cmd,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    ) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
            raise subprocess.TimeoutExpired(cmd, timeout, output=out) from None
        return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def run_one(m: Mutation) -> Outcome:
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"cronmesh-mut-{m.name}-") as tmp:
        try:
            root = mutated_copy(m, Path(tmp))
        except PatternGone as exc:
            return Outcome(m, "error", time.monotonic() - t0, str(exc))
        # bytecode is written in the copy (a private folder): the node processes a test starts
        # reuse what its pytest compiled (D327)
        env = dict(os.environ, PYTHONPATH=str(root))
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        cmd = [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-rf",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:schemathesis",  # ~0.5 s of imports per pytest; no mutation's test uses it
            "--timeout",
            "60",
            "-o",
            "addopts=--strict-markers",
            *m.tests,
        ]
        try:
            res = run_group(cmd, cwd=root, env=env, timeout=TEST_TIMEOUT)
        except subprocess.TimeoutExpired as exc:
            out = (exc.stdout or "")[-2000:]
            return Outcome(
                m, "error", time.monotonic() - t0, f"no verdict in {TEST_TIMEOUT}s {out!r}"
            )
    took = time.monotonic() - t0
    tail = "\n".join((res.stdout + res.stderr).strip().splitlines()[-15:])
    if res.returncode == 1:
        # every named test must fail (so docs/reliability.md can say which tests catch it)
        failed = [ln.split()[1] for ln in res.stdout.splitlines() if ln.startswith("FAILED ")]
        passed = [t for t in m.tests if not any(f == t or f.startswith(f"{t}[") for f in failed)]
        if passed:
            return Outcome(m, "survived", took, f"these tests passed: {passed}\n{tail}")
        return Outcome(m, "caught", took, f"by {len(m.tests)} test(s)")
    if res.returncode == 0:
        return Outcome(m, "survived", took, tail)
    return Outcome(m, "error", took, f"pytest exit code {res.returncode}:\n{tail}")


def weight(m: Mutation) -> tuple[int, int]:
    """Sort key, heaviest first: tests outside tests/unit (a real etcd, node processes), then
    the number of tests."""
    heavy = sum(not t.startswith("tests/unit/") for t in m.tests)
    return (-heavy, -len(m.tests))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.mutations", description=__doc__)
    p.add_argument("names", nargs="*", help="mutations to run (default: all)")
    p.add_argument("--list", action="store_true", help="list the mutations and exit")
    p.add_argument("--patterns", action="store_true", help="only check that patterns match")
    p.add_argument("--jobs", type=int, default=2, help="mutations run at once (default 2)")
    args = p.parse_args(argv)
    chosen = by_name(args.names)
    if args.list:
        for m in chosen:
            print(f"{m.name:28} {m.file:28} {m.guards}")
            for t in m.tests:
                print(f"{'':28} caught by {t}")
        return 0
    problems = check_patterns(chosen)
    if problems or args.patterns:
        for line in problems:
            print(f"ENTRY {line}")
        print(f"{len(chosen) - len(problems)} of {len(chosen)} entries match the code")
        return 1 if problems else 0
    t0 = time.monotonic()
    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        # The longest first (D327): mutations caught by tests that start etcd clients and node
        # processes, then those caught by unit tests alone, so no long one starts last.
        futures = {m.name: pool.submit(run_one, m) for m in sorted(chosen, key=weight)}
        outcomes = [futures[m.name].result() for m in chosen]
    for o in outcomes:
        print(f"{o.verdict.upper():9} {o.mutation.name:28} {o.seconds:5.1f}s  {o.detail[:120]}")
    bad = [o for o in outcomes if o.verdict != "caught"]
    for o in bad:
        print(f"\n--- {o.mutation.name} {o.verdict}: {o.mutation.guards}\n{o.detail}")
    caught = len(outcomes) - len(bad)
    print(f"\n{caught} of {len(outcomes)} mutations caught in {time.monotonic() - t0:.0f}s")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
