"""Per-run uids, as systemd's ``DynamicUser`` (D205): the pure choice of a free one.

A run whose job names no ``run_as`` user runs, on a root node with ``run_as_default: dynamic``,
as a uid (and gid) of its own from the node's ``run_uid_range``. The choice rotates through the
range from after the last uid given, so a uid comes back only after every other free one was
used; ``taken`` holds the uids of this node's live runs and the uids in the range that some
process (an earlier node's, a run's escaped child) or a passwd/group entry still holds.
"""

from __future__ import annotations

from collections.abc import Container

DEFAULT_RANGE = (61184, 65519)  # systemd's DynamicUser range: no distribution assigns it
MAX_UID = 2**31 - 2  # setpriv and the kernel take any uid below (uid_t)-1; keep to 31 bits


def check_range(lo: int, hi: int) -> str | None:
    """What is wrong with a ``run_uid_range`` (None: nothing)."""
    if not 1000 <= lo <= hi <= MAX_UID:
        return f"run_uid_range {lo}-{hi} must satisfy 1000 <= first <= last <= {MAX_UID}"
    return None


def choose_uid(lo: int, hi: int, after: int | None, taken: Container[int]) -> int | None:
    """The first uid of ``lo..hi`` after ``after`` (wrapping round) that is not ``taken``;
    None when every uid of the range is taken. ``after`` None (or outside): start at ``lo``."""
    size = hi - lo + 1
    start = 0 if after is None or not lo <= after <= hi else (after - lo + 1) % size
    for i in range(size):
        uid = lo + (start + i) % size
        if uid not in taken:
            return uid
    return None
