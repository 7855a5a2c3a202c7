"""etcd refuses a transaction of more than ``--max-txn-ops`` compares or operations (128 by
default). A document's write compares every reference it holds (groups, secrets, calendars,
budgets, upstreams) so that none vanishes while it is written; each kind is bounded on its own,
but not their sum. :func:`fit_compares` checks the sum before anything is written, as a 400
naming the field that holds the most, instead of a refusal from etcd that names nothing."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cluster.errors import InvalidInput

MAX_TXN_OPS = 128  # etcd's default --max-txn-ops


def fit_compares(parts: Sequence[tuple[str, Sequence[Any]]], own: int = 1) -> None:
    """``parts``: (field, its compares); ``own``: the write's other compares (its revision)."""
    total = own + sum(len(guards) for _, guards in parts)
    if total <= MAX_TXN_OPS:
        return
    field = max(parts, key=lambda part: len(part[1]))[0]
    counts = ", ".join(f"{len(guards)} for {name}" for name, guards in parts if guards)
    raise InvalidInput(
        f"{field}: this document's references need {total} checks in one etcd transaction "
        f"({counts}); etcd takes at most {MAX_TXN_OPS}: name fewer",
        field=field,
    )
