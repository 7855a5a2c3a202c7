"""The APScheduler 3 side of the comparison (runs in the peers' virtualenv).

``python -m bench.peers.apsched_run --store memory|sqlite --jobs N (--every-second | --at T)``
starts a ``BackgroundScheduler`` with the chosen job store and a thread pool, adds N jobs that run
``bench.peers.task:run_true`` (every whole second through ``CronTrigger(second="*")``, or once at
unix time T through ``DateTrigger``), prints ``ready`` and runs until SIGTERM. Everything else is
APScheduler's defaults (misfire grace time 1 s, no coalescing).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from datetime import UTC, datetime

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--store", choices=("memory", "sqlite"), required=True)
    ap.add_argument("--sqlite", default="jobs.sqlite", help="path of the SQLite file")
    ap.add_argument("--jobs", type=int, required=True)
    ap.add_argument("--threads", type=int, default=64)
    when = ap.add_mutually_exclusive_group(required=True)
    when.add_argument("--every-second", action="store_true")
    when.add_argument("--at", type=float)
    args = ap.parse_args()

    store = (
        MemoryJobStore()
        if args.store == "memory"
        else SQLAlchemyJobStore(url=f"sqlite:///{args.sqlite}")
    )
    sched = BackgroundScheduler(
        jobstores={"default": store},
        executors={"default": ThreadPoolExecutor(args.threads)},
        timezone="UTC",
    )
    sched.start(paused=True)
    for i in range(args.jobs):
        trigger = (
            CronTrigger(second="*", timezone="UTC")
            if args.every_second
            else DateTrigger(datetime.fromtimestamp(args.at, UTC))
        )
        name = f"j{i:05d}"
        sched.add_job(
            "bench.peers.task:run_true", trigger, args=(name,), id=name, replace_existing=True
        )
    sched.resume()
    print(f"ready {time.time():.3f}", flush=True)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    sched.shutdown(wait=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
