"""Side by side: ``python -m bench.peers [--quick] [--only celery,apscheduler,airflow]``."""

from __future__ import annotations

import argparse
import signal
import sys
from types import FrameType

from bench.peers import PEERS, run_all


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.peers", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="short windows (a few minutes)")
    ap.add_argument("--only", default=",".join(PEERS), help=f"subset of {', '.join(PEERS)}")
    ap.add_argument(
        "--cronmesh",
        choices=("latest", "run", "skip"),
        default="latest",
        help="cronmesh's side: the latest bench/results/*.json (run bench.run when there are "
        "none), a fresh `bench.run --only lag,e2e`, or no comparison",
    )
    args = ap.parse_args(argv)
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    if only - set(PEERS):
        ap.error(f"unknown peer(s): {', '.join(sorted(only - set(PEERS)))}")
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_interrupt)
    try:
        run_all(quick=args.quick, only=only, cronmesh=args.cronmesh)
    except KeyboardInterrupt:
        print("\nbench.peers: interrupted; stopped what it started", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
