"""CPU of the log uploader's pass and what it keeps (D387): ``python -m bench.uploaderpass
[--attempts 400] [--passes 1000] [--silent 10000]``.

``--attempts`` spools are open (running attempts that wrote nothing yet); each pass, one ends
without output and a new one starts, as at a few hundred runs/s, and the uploader's
``pass_once`` runs: its thread CPU per pass is printed, with the shipping state it keeps. Then
``--silent`` attempts each open, meet a pass and end without output, and the memory kept
(tracemalloc) is printed. To compare with another tree, run this file with that tree as the
working directory and on ``PYTHONPATH`` (the script imports only ``logstore``).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

from logstore.local import LocalFolderStore
from logstore.spool import LogRef, Spool
from logstore.uploader import Uploader


async def churn(attempts: int, passes: int) -> tuple[float, int]:
    tmp = Path(tempfile.mkdtemp(prefix="cronmesh-uploaderpass-"))
    spool = Spool(tmp / "spool")
    up = Uploader(spool, LocalFolderStore(tmp / "store"), segment_interval=2.0)
    writers = [spool.open(LogRef("p", "j", f"{i:06d}", 1)) for i in range(attempts)]
    t = time.thread_time()
    for k in range(passes):
        writers[k % attempts].close()
        writers[k % attempts] = spool.open(LogRef("p", "j", f"{attempts + k:06d}", 1))
        await up.pass_once()
    return (time.thread_time() - t) / passes, len(up._shipping)


async def silent(n: int) -> float:
    tmp = Path(tempfile.mkdtemp(prefix="cronmesh-uploaderpass-"))
    spool = Spool(tmp / "spool")
    up = Uploader(spool, LocalFolderStore(tmp / "store"))
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for k in range(n):
        w = spool.open(LogRef("p", "j", f"{k:06d}", 1))
        await up.pass_once()
        w.close()
    await up.pass_once()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    return sum(s.size_diff for s in after.compare_to(before, "filename"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.uploaderpass", description=__doc__)
    ap.add_argument("--attempts", type=int, default=400)
    ap.add_argument("--passes", type=int, default=1000)
    ap.add_argument("--silent", type=int, default=10_000)
    args = ap.parse_args(argv)
    per_pass, kept = asyncio.run(churn(args.attempts, args.passes))
    print(
        f"{per_pass * 1e6:.0f} µs of CPU per pass over {args.attempts} running attempts; "
        f"shipping state kept: {kept} entries"
    )
    grown = asyncio.run(silent(args.silent))
    print(f"{args.silent} attempts without output: {grown / 1e6:.2f} MB kept")
    return 0


if __name__ == "__main__":
    sys.exit(main())
