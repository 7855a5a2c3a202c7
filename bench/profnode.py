"""``cronmesh node`` under cProfile, switched on and off by signals (for ``bench.run --profile``).

    python -m bench.profnode OUT.prof node --etcd ... (the arguments of ``cronmesh``)

SIGUSR1 starts profiling, SIGUSR2 stops it and writes OUT.prof, so only a measurement window is
profiled (not start-up or job creation). cProfile roughly doubles the CPU a node uses: read the
shares of time, not the absolute numbers. The clock is the profiled thread's CPU time
(``time.thread_time``; ``BENCH_PROFILE_CLOCK=wall`` for wall time): a call that waits (the
parent's wait for a child's ``exec`` under ``vfork``, a blocking ``rmdir``) then counts for the
CPU it used, not for the time it took; threads other than the event loop's are not profiled.
"""

from __future__ import annotations

import cProfile
import os
import signal
import sys
import time
from types import FrameType


def main() -> int:
    out, argv = sys.argv[1], sys.argv[2:]
    wall = os.environ.get("BENCH_PROFILE_CLOCK") == "wall"
    prof = cProfile.Profile() if wall else cProfile.Profile(time.thread_time)

    def start(signum: int, frame: FrameType | None) -> None:
        prof.enable()

    def stop(signum: int, frame: FrameType | None) -> None:
        prof.disable()
        prof.dump_stats(out)

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)
    from nodes.cli.main import main as cronmesh

    return cronmesh(argv)


if __name__ == "__main__":
    sys.exit(main())
