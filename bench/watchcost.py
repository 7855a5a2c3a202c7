"""What a watch event and a watch response cost the node: ``python -m bench.watchcost [--txns
600] [--puts 4] [--rounds 2]``.

A fresh etcd (as the benchmarks start it); this process writes ``--txns`` transactions of
``--puts`` small puts each (a run index's values, ``pending`` / ``succeeded``) under one prefix,
paced at ``--rate`` transactions a second, while a watcher PROCESS follows the prefix with
``cluster.watch.follow`` (the node's own read-then-watch loop) in one of these ways:

- ``one``: one watch, one handler (what a prefix followed by one component costs);
- ``three``: three watches of the prefix, one handler each (the leader's run index before D421:
  the notifier, the workflow engine and the dependency waits each followed it);
- ``shared``: one watch whose events go to three handlers (one stream, fanned out).

The watcher's CPU (all its threads: the loop, gRPC's) from its first event to its last is
divided by the transactions (one response per watch each) and by the events its handlers got;
etcd's CPU over the round (the writes and what it sends) by the transactions.
Ways alternate within each round. Prints µs per transaction and per event, with the load.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench.harness import bench_etcd, proc_cpu
from cluster.etcd import Etcd, Event, Op
from cluster.watch import follow

PREFIX = "/bench/job-runs/"
WAYS = ("one", "three", "shared")


def _cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


async def _watch(endpoint: str, way: str, expect: int) -> None:
    """The watcher process: follow PREFIX until ``expect`` events reached each handler."""
    seen = [0, 0, 0]
    first: list[float] = []
    done = asyncio.Event()

    def handler(i: int) -> object:
        def on(ev: Event) -> None:
            if not first:
                first.append(_cpu())
            # what a run-index handler does: split the key, look at the value
            ev.kv.key[len(PREFIX) :].split("/", 3)
            if ev.kind == "put":
                ev.kv.value.decode()
            seen[i] += 1
            if min(seen[:n]) >= expect:
                done.set()

        return on

    n = 1 if way == "one" else 3
    handlers = [handler(i) for i in range(n)]

    def fan(ev: Event) -> None:
        for h in handlers:
            h(ev)  # type: ignore[operator]

    async with Etcd([endpoint]) as etcd:
        rev = (await etcd.range(PREFIX, count_only=True)).revision
        if way == "shared":
            tasks = [asyncio.create_task(follow(etcd, PREFIX, rev, fan))]
        else:
            tasks = [asyncio.create_task(follow(etcd, PREFIX, rev, h)) for h in handlers]  # type: ignore[arg-type]
        print("ready", flush=True)
        await done.wait()
        spent = _cpu() - first[0]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    print(f"cpu {spent:.6f}", flush=True)


ROOT = str(Path(__file__).resolve().parent.parent)


async def _round(endpoint: str, etcd: Etcd, way: str, txns: int, puts: int, rate: float) -> float:
    child = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "bench.watchcost", "--watcher", endpoint, way, str(txns * puts)),
        stdout=asyncio.subprocess.PIPE,
        env=dict(os.environ, PYTHONPATH=ROOT),
    )
    assert child.stdout is not None
    try:
        line = await child.stdout.readline()
        assert line.strip() == b"ready", line
        gap = 1 / rate
        start = time.monotonic()
        for i in range(txns):
            value = b"pending" if i % 2 == 0 else b"succeeded"
            ops = [Op.put(f"{PREFIX}p/j{j}/r{i}", value) for j in range(puts)]
            await etcd.txn([], ops)
            ahead = start + (i + 1) * gap - time.monotonic()
            if ahead > 0:
                await asyncio.sleep(ahead)
        out = await child.stdout.read()
        await child.wait()
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
    return float(out.split()[-1])


async def measure(txns: int, puts: int, rate: float, rounds: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="cronmesh-watchcost-"))
    try:
        async with bench_etcd(tmp) as (server, etcd):
            for r in range(rounds):
                ways = WAYS if r % 2 == 0 else tuple(reversed(WAYS))
                for way in ways:
                    load = os.getloadavg()[0]
                    etcd_before = proc_cpu(server.pid).self_s
                    spent = await _round(server.endpoint, etcd, way, txns, puts, rate)
                    etcd_spent = proc_cpu(server.pid).self_s - etcd_before
                    handlers = 1 if way == "one" else 3
                    print(
                        f"round {r + 1} {way:>6}: {spent / txns * 1e6:7.1f} µs per transaction, "
                        f"{spent / (txns * puts * handlers) * 1e6:6.2f} µs per event handled; "
                        f"etcd {etcd_spent / txns * 1e6:6.1f} µs per transaction "
                        f"({txns} transactions of {puts} puts; load {load:.2f})",
                        flush=True,
                    )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--watcher":
        asyncio.run(_watch(argv[1], argv[2], int(argv[3])))
        return 0
    ap = argparse.ArgumentParser(prog="python -m bench.watchcost", description=__doc__)
    ap.add_argument("--txns", type=int, default=600)
    ap.add_argument("--puts", type=int, default=4, help="puts per transaction")
    ap.add_argument("--rate", type=float, default=200.0, help="transactions per second")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args(argv)
    asyncio.run(measure(args.txns, args.puts, args.rate, args.rounds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
