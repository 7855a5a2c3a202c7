"""Fire-time computation speed of ``cluster.cron`` (and of croniter when importable).

``python -m bench.cronspeed`` walks each expression's next 2,000 fire times from a fixed instant
and prints fire times per second, per expression and in total. croniter is not a dependency:
when it is importable (e.g. ``PYTHONPATH=/tmp/croniter``) the same walk is timed with it too.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from cluster.cron import parse_schedule

EXPRESSIONS = [
    ("*/5 * * * *", "UTC"),
    ("30 2 * * *", "Europe/Paris"),
    ("15 9-17 * * MON-FRI", "America/New_York"),
    ("0 0 1,15 * *", "Europe/Berlin"),
    ("*/15 * * * *", "Australia/Lord_Howe"),
    ("0 12 * * SAT,SUN", "Australia/Sydney"),
    ("30 4 1 JAN,JUL *", "UTC"),
]
START = datetime(2026, 1, 1, tzinfo=UTC)
N = 2000


def ours(expr: str, tz: str) -> float:
    sched = parse_schedule(cron=expr, timezone=tz)
    t0 = time.perf_counter()
    t = START
    for _ in range(N):
        nxt = sched.next_after(t)
        assert nxt is not None
        t = nxt
    return N / (time.perf_counter() - t0)


def theirs(expr: str, tz: str) -> float | None:
    try:
        from croniter import croniter  # type: ignore[import-not-found]
    except ImportError:
        return None
    from zoneinfo import ZoneInfo

    it = croniter(expr, START.astimezone(ZoneInfo(tz)))
    t0 = time.perf_counter()
    for _ in range(N):
        it.get_next(datetime)
    return N / (time.perf_counter() - t0)


def main() -> None:
    tot_ours = tot_theirs = 0.0
    for expr, tz in EXPRESSIONS:
        a = max(ours(expr, tz) for _ in range(3))
        b = theirs(expr, tz)
        if b is not None:
            b = max(b, *(theirs(expr, tz) or 0.0 for _ in range(2)))
        tot_ours += N / a
        tot_theirs += N / b if b else 0.0
        ratio = f"  croniter {b:9.0f}/s  x{a / b:4.1f}" if b else ""
        print(f"{expr:24} {tz:20} cronmesh {a:9.0f}/s{ratio}")
    total = len(EXPRESSIONS) * N
    line = f"total: cronmesh {total / tot_ours:.0f}/s"
    if tot_theirs:
        line += f", croniter {total / tot_theirs:.0f}/s, x{tot_theirs / tot_ours:.1f}"
    print(line)


if __name__ == "__main__":
    main()
