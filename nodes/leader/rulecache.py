"""The leader's picture of calendars, blackout windows and the freeze (D238): read at the
scheduler's load revision, then followed by watches. Planning asks it for one job's rules."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from typing import Any, TypeVar

import structlog

from cluster.calendar_store import add_calendar, add_window, freeze_of
from cluster.errors import OutcomeUnknown, Unavailable
from cluster.etcd import Compare, Etcd, Event, Op, Range
from cluster.keys import Keys
from cluster.models import Job
from cluster.slotrules import SKIPPED_FREEZE, Freeze, JobRules, SlotDecision, SlotRules
from cluster.tickplan import slot_record
from cluster.watch import follow

log = structlog.get_logger(__name__)
S = TypeVar("S")  # a tick's source


class RuleCache:
    """A snapshot of the rules at one revision, replaced whole when any of them changes (D339).

    The rules are followed by their own watches, which etcd does not order against the jobs'
    watch: a job written just after a freeze may reach the leader first. So every tick
    transaction carries :meth:`guard` — the rules marker (written with every rule change) still
    at the snapshot's revision — and a refused guard reloads the snapshot (:meth:`catch_up`)
    before the job is planned again. Rule changes are rare operator acts: a whole reload each
    is cheap, and a snapshot is never half old, half new."""

    def __init__(self, etcd: Etcd, keys: Keys) -> None:
        self.etcd = etcd
        self.keys = keys
        self.rules = SlotRules()
        self.marker_rev = 0  # the rules marker's mod revision in the snapshot (0: absent)
        self.revision = 0  # the snapshot's revision
        self._lock = asyncio.Lock()
        self._dirty = False
        self._tg: asyncio.TaskGroup | None = None
        self._reloading: asyncio.Task[None] | None = None

    async def load(self, rev: int) -> None:
        """Read every rule at revision ``rev`` and make it the snapshot."""
        etcd, keys = self.etcd, self.keys
        marker_read = etcd.range(keys.rules_marker(), prefix=False, revision=rev)
        if not rev:  # now: the marker's read fixes the revision the others are read at
            marker = await marker_read
            rev, marker_read = marker.revision, _known(marker)
        # at one revision, the reads go at once (a new leader waits for each, D411)
        cals, wins, freeze, marker = await asyncio.gather(
            etcd.range_all(keys.calendars(), revision=rev),
            etcd.range_all(keys.blackouts(), revision=rev),
            etcd.range(keys.freeze(), prefix=False, revision=rev),
            marker_read,
        )
        rules = SlotRules()
        for kv in cals.kvs:
            _apply(rules, self.keys, add_calendar, kv.key, kv.value)
        for kv in wins.kvs:
            _apply(rules, self.keys, add_window, kv.key, kv.value)
        rules.freeze = freeze_of(freeze.kvs[0].value if freeze.kvs else None)
        if rev < self.revision:
            return  # a newer snapshot was taken meanwhile
        was_frozen = self.rules.freeze is not None
        self.rules = rules
        self.revision = rev
        self.marker_rev = marker.kvs[0].mod_revision if marker.kvs else 0
        if self._tg is not None and was_frozen != (rules.freeze is not None):
            log.info("cluster freeze", frozen=rules.freeze is not None)

    async def reload(self, seen: int = 0) -> None:
        """Take a new snapshot at the current revision (one at a time). ``seen``: the marker's
        revision a refused transaction read; a snapshot already that new is kept, so the jobs
        of one refused batch, retried one by one, reload once and not once each."""
        async with self._lock:
            if not seen or self.marker_rev < seen:
                await self.load(0)

    async def catch_up(self) -> None:
        """A tick transaction's guard was refused: reload if the marker moved since the
        snapshot (it may also have been refused for another compare)."""
        kv = await self.etcd.get(self.keys.rules_marker())
        if self.moved(kv.mod_revision if kv else 0):
            await self.reload(kv.mod_revision if kv else 0)

    def moved(self, marker_rev: int) -> bool:
        """Whether the marker, at ``marker_rev`` as a read found it, is newer than the
        snapshot."""
        return marker_rev != self.marker_rev

    def guard(self) -> Any:
        """The compare that fails when a rule changed after the snapshot."""
        return Compare.modified(self.keys.rules_marker(), self.marker_rev)

    def follow(self, tg: asyncio.TaskGroup, rev: int) -> None:
        """Start the watches (tasks of the scheduler's group): any change takes a new snapshot,
        also one written by hand without the marker (``etcdctl``), then without the guard."""
        self._tg = tg
        for prefix in (self.keys.calendars(), self.keys.blackouts(), self.keys.freeze()):
            tg.create_task(follow(self.etcd, prefix, rev, self._changed, None, reset=self._changed))

    def for_job(self, job: Job) -> JobRules | None:
        """The rules of one job; None when there are none at all (the common case: no work)."""
        if self.rules.empty:
            return None
        return self.rules.for_job(job.project, job.name, job.tags)

    def skip_frozen(
        self,
        wk: tuple[str, str],
        fp: str,
        ticks: list[tuple[datetime, S]],
        skips: list[tuple[Any, Any]],
    ) -> list[tuple[datetime, S]]:
        return skip_frozen(self.keys, wk, fp, ticks, self.rules.freeze, skips)

    # -- changes --------------------------------------------------------------------------------

    def _changed(self, _ev: Event | None = None) -> None:
        self._dirty = True
        if self._tg is not None and (self._reloading is None or self._reloading.done()):
            self._reloading = self._tg.create_task(self._reload_while_dirty())

    async def _reload_while_dirty(self) -> None:
        delay = 0.1
        while self._dirty:
            self._dirty = False
            try:
                await self.reload()
                delay = 0.1
            except (Unavailable, OutcomeUnknown) as exc:  # etcd away: the guard holds ticks
                log.warning("cannot reload calendars and windows", error=str(exc))
                self._dirty = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)


def _apply(rules: SlotRules, keys: Keys, add: Any, key: str, value: bytes | None) -> None:
    try:
        add(rules, keys, key, value)
    except Exception as exc:  # written by a newer version, or by hand: ignore that one
        log.error("cannot read calendar or window; ignoring it", key=key, error=str(exc))
        add(rules, keys, key, None)  # not its previous version either


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


async def _known(value: Range) -> Range:
    return value
