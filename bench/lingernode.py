"""``cronmesh node`` with the worker's completion linger (D353) set for a benchmark:

    BENCH_COMPLETION_LINGER=0.02 python -m bench.lingernode node --etcd ... (``cronmesh``'s args)

The shipped default (``nodes.worker.attempt.COMPLETION_LINGER``) is not changed; only this
process's worker uses the value, so ``bench.lagside --linger`` can alternate 0 and 0.02 on one
tree.
"""

from __future__ import annotations

import os
import sys


def main() -> int:
    from nodes.worker import executing

    executing.COMPLETION_LINGER = float(os.environ["BENCH_COMPLETION_LINGER"])
    from nodes.cli.main import main as cronmesh

    return cronmesh(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
