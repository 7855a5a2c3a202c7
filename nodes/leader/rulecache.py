"""The leader's picture of calendars, blackout windows and the freeze (D238): read at the
scheduler's load revision, then followed by watches. Planning asks it for one job's rules."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from typing import Any, TypeVar

import structlog

from cluster.calendar_store import add_calendar, add_window, freeze_of
from cluster.etcd import Compare, Etcd, Event, Op
from cluster.keys import Keys
from cluster.models import Job
from cluster.slotrules import SKIPPED_FREEZE, Freeze, JobRules, SlotDecision, SlotRules
from cluster.tickplan import slot_record
from cluster.watch import follow

log = structlog.get_logger(__name__)
S = TypeVar("S")  # a tick's source


class RuleCache:
    def __init__(self, etcd: Etcd, keys: Keys) -> None:
        self.etcd = etcd
        self.keys = keys
        self.rules = SlotRules()

    async def load(self, rev: int) -> None:
        cals = await self.etcd.range_all(self.keys.calendars(), revision=rev)
        wins = await self.etcd.range_all(self.keys.blackouts(), revision=rev)
        freeze = await self.etcd.range(self.keys.freeze(), prefix=False, revision=rev)
        for kv in cals.kvs:
            self._apply(add_calendar, kv.key, kv.value)
        for kv in wins.kvs:
            self._apply(add_window, kv.key, kv.value)
        self.rules.freeze = freeze_of(freeze.kvs[0].value if freeze.kvs else None)

    def follow(self, tg: asyncio.TaskGroup, rev: int) -> None:
        """Start the watches (tasks of the scheduler's group)."""
        tg.create_task(
            follow(
                self.etcd, self.keys.calendars(), rev, self._event(add_calendar), self._known(True)
            )
        )
        tg.create_task(
            follow(
                self.etcd, self.keys.blackouts(), rev, self._event(add_window), self._known(False)
            )
        )
        tg.create_task(
            follow(
                self.etcd,
                self.keys.freeze(),
                rev,
                self._on_freeze,
                lambda: {self.keys.freeze()} if self.rules.freeze is not None else set(),
            )
        )

    def for_job(self, job: Job) -> JobRules | None:
        """The rules of one job; None when there are none at all (the common case: no work)."""
        if self.rules.empty:
            return None
        return self.rules.for_job(job.project, job.name, job.tags)

    # -- events ---------------------------------------------------------------------------------

    def _apply(self, add: Any, key: str, value: bytes | None) -> None:
        try:
            add(self.rules, self.keys, key, value)
        except Exception as exc:  # written by a newer version, or by hand: ignore that one
            log.error("cannot read calendar or window; ignoring it", key=key, error=str(exc))
            add(self.rules, self.keys, key, None)  # not its previous version either

    def _event(self, add: Any) -> Any:
        def handle(ev: Event) -> None:
            self._apply(add, ev.kv.key, ev.kv.value if ev.kind == "put" else None)

        return handle

    def _known(self, calendars: bool) -> Any:
        def known() -> set[str]:
            table = self.rules.calendars if calendars else self.rules.windows
            make = self.keys.calendar if calendars else self.keys.blackout
            return {make(scope, name) for scope, names in table.items() for name in names}

        return known

    def _on_freeze(self, ev: Event) -> None:
        if ev.kv.key != self.keys.freeze():
            return
        self.rules.freeze = freeze_of(ev.kv.value if ev.kind == "put" else None)
        log.info("cluster freeze", frozen=self.rules.freeze is not None)


def skip_frozen(
    keys: Keys,
    wk: tuple[str, str],
    fp: str,
    ticks: list[tuple[datetime, S]],
    freeze: Freeze | None,
    skips: list[tuple[Any, Any]],
) -> list[tuple[datetime, S]]:
    """A workflow schedule's due ticks to fire: none while the cluster is frozen (D239). Each
    frozen tick's record (its key created once, the outcome and the note) goes to ``skips`` as
    a (compare, op) pair for the workflow's transaction."""
    if freeze is None:
        return ticks
    decision = SlotDecision("skip", SKIPPED_FREEZE, f"cluster frozen: {freeze.note}")
    for tick, _ in ticks:
        key = keys.workflow_tick(*wk, fp, int(tick.timestamp() * 1000))
        record = {**json.loads(slot_record(tick, fp, decision)), "execution": None}
        skips.append((Compare.absent(key), Op.put(key, json.dumps(record))))
    return []
