"""Blackout windows: spans of time in which a job's slots are skipped or deferred (D237).

A window is dated (``start``/``end``, half-open ``[start, end)``) or recurring (``cron`` gives
each occurrence's start in ``timezone``, ``duration`` its length). It applies to the jobs it
names, the jobs carrying one of its tags, or, naming neither, to every job of its scope (a
project, or the cluster). ``action: skip`` drops the slots inside; ``action: defer`` turns them
into one run at the window's end. Pure: no I/O; ``now`` only where validation needs a start.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from cluster.cron import Schedule, parse_duration, parse_schedule, validate_timezone
from cluster.errors import InvalidSchedule
from cluster.fields import Name, Strict, SubFieldError

MAX_DURATION = 366 * 86400.0
OVERLAP_PROBE = 64  # occurrences of a recurring window checked for overlaps when saved
CHAIN_LIMIT = 16  # defer windows followed end to end when one ends inside the next

Action = Literal["skip", "defer"]


class WindowSpec(Strict):
    """What a user writes: ``cronmesh blackout apply -f``, ``PUT …/blackouts/{name}``."""

    name: Name
    description: str = Field(default="", max_length=4096)
    start: datetime | None = None
    end: datetime | None = None
    cron: str | None = Field(default=None, max_length=256)
    duration: str | float | None = None
    timezone: str = "UTC"
    action: Action = "skip"
    jobs: list[Name] = Field(default_factory=list, max_length=256)
    tags: list[Annotated[str, Field(max_length=64)]] = Field(default_factory=list, max_length=64)

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value: str) -> str:
        validate_timezone(value)
        return value

    @field_validator("start", "end")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        if not 1970 <= value.year <= 9998:
            raise ValueError("must lie between the years 1970 and 9998")
        # stored in UTC: one spelling per instant (a comparison sees no false change)
        return value.astimezone(UTC) if value.tzinfo is not None else value.replace(tzinfo=UTC)

    @model_validator(mode="after")
    def _shape(self) -> WindowSpec:
        dated = self.start is not None or self.end is not None
        recurring = self.cron is not None or self.duration is not None
        if dated == recurring:
            raise SubFieldError(
                "a window is dated (start, end) or recurring (cron, duration)", "start"
            )
        if dated:
            if self.start is None or self.end is None:
                which = "end" if self.end is None else "start"
                raise SubFieldError("a dated window needs start and end", which)
            if self.end <= self.start:
                raise SubFieldError("must be after start", "end")
            return self
        if self.cron is None:
            raise SubFieldError("a recurring window needs cron and duration", "cron")
        seconds = self.seconds()
        if not 1 <= seconds <= MAX_DURATION:
            raise SubFieldError("between 1 s and 366 days", "duration")
        sched = self.schedule()
        # occurrences closer together than the duration would overlap: nonsense, refuse it
        prev = sched.next_after(datetime.now(UTC))
        for _ in range(OVERLAP_PROBE):
            if prev is None:
                break
            nxt = sched.next_after(prev)
            if nxt is not None and (nxt - prev).total_seconds() < seconds:
                raise SubFieldError(
                    f"occurrences at {prev.isoformat()} and {nxt.isoformat()} are "
                    f"{int((nxt - prev).total_seconds())} s apart; a window of {int(seconds)} s "
                    "would overlap the next one",
                    "duration",
                )
            prev = nxt
        return self

    def seconds(self) -> float:
        if isinstance(self.duration, str):
            try:
                return parse_duration(self.duration)
            except InvalidSchedule as exc:
                raise SubFieldError(exc.message.removeprefix("every: "), "duration") from None
        return float(self.duration or 0)

    def schedule(self) -> Schedule:
        try:
            return parse_schedule(cron=self.cron, timezone=self.timezone, hash_key=self.name)
        except InvalidSchedule as exc:
            raise SubFieldError(exc.message.removeprefix("cron: "), "cron") from None


class Window:
    """A window made ready to answer "which occurrence holds this instant?"."""

    __slots__ = (
        "_known",
        "action",
        "duration",
        "end",
        "jobs",
        "name",
        "sched",
        "scope",
        "start",
        "tags",
    )

    def __init__(self, spec: WindowSpec, scope: str) -> None:
        self.name = spec.name
        self.scope = scope  # a project name, or "*" for the cluster
        self.action: Action = spec.action
        self.jobs = frozenset(spec.jobs)
        self.tags = frozenset(spec.tags)
        self.start, self.end = spec.start, spec.end
        self.sched = spec.schedule() if spec.cron is not None else None
        self.duration = timedelta(seconds=spec.seconds()) if spec.cron is not None else None
        # the last answer of ``holding`` and the span of instants it holds for: slots are asked
        # in order, so most questions fall in it (one cron step per occurrence, not per slot)
        self._known: tuple[datetime, datetime, tuple[datetime, datetime] | None] | None = None

    @property
    def label(self) -> str:
        return self.name if self.scope != "*" else f"cluster:{self.name}"

    def applies_to(self, job: str, tags: frozenset[str] | set[str]) -> bool:
        if not self.jobs and not self.tags:
            return True
        return job in self.jobs or bool(self.tags & tags)

    def holding(self, t: datetime) -> tuple[datetime, datetime] | None:
        """The occurrence ``[start, end)`` that holds instant ``t``, or None."""
        if self.sched is None:
            assert self.start is not None and self.end is not None
            return (self.start, self.end) if self.start <= t < self.end else None
        assert self.duration is not None
        known = self._known
        if known is not None and known[0] <= t < known[1]:
            return known[2]
        begin = self.sched.next_after(t - self.duration)
        if begin is None:
            self._known = (t, datetime.max.replace(tzinfo=UTC), None)
            return None
        if begin > t:  # between occurrences: nothing holds until ``begin``
            self._known = (t, begin, None)
            return None
        occurrence = (begin, begin + self.duration)
        self._known = (begin, begin + self.duration, occurrence)
        return occurrence
