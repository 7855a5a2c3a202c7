"""The documents of cronmesh, defined once: they validate API input and the CLI's YAML, shape the
errors, and are what is stored (as JSON) in etcd. The field types they share (names, parameters,
``env``, ``Strict``) are ``cluster.fields``.
"""

from __future__ import annotations

import functools
import hashlib
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal, Protocol, TypeVar

from pydantic import (
    BaseModel,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from cluster.deadlines import Deadlines, Duration, KillGrace, RetryInterval, Timeout
from cluster.depends_spec import MAX_DEPENDS, Dependency, Gate, MaxWait
from cluster.errors import InvalidInput, InvalidSchedule
from cluster.field_hints import unknown_field_hint
from cluster.fields import (
    NAME_PATTERN,
    NAME_RULE,
    Env,
    Name,
    Params,
    SecretRef,
    Strict,
    SubFieldError,
    no_nul,
)
from cluster.notify import NotificationRule
from cluster.resources import Resources
from cluster.runcodec import snapshot_field

if TYPE_CHECKING:
    from cluster.cron import Schedule

MAX_COMMAND = 64 * 1024
MAX_SCHEDULES = 32
MAX_JOB_BYTES = 256 * 1024

M = TypeVar("M", bound=BaseModel)

Overlap = Literal["allow", "forbid", "replace", "queue"]
Catchup = Literal["none", "latest", "all"]
RunStatus = Literal[
    "pending", "running", "succeeded", "failed", "timed_out", "cancelled", "lost", "skipped"
]
RunSource = Literal["schedule", "manual", "retry", "backfill", "catch-up", "hook", "rerun"]
FINISHED: frozenset[str] = frozenset(
    {"succeeded", "failed", "timed_out", "cancelled", "lost", "skipped"}
)


def secret_refs(env: dict[str, str | SecretRef]) -> dict[str, str]:
    """Variable name -> secret name, for the variables of ``env`` that reference a secret."""
    return {k: v.secret for k, v in env.items() if isinstance(v, SecretRef)}


@functools.lru_cache(maxsize=4096)
def _check_cron(value: str) -> None:
    """Validate a cron expression once: every Run read back carries its job's schedules, and
    re-parsing them was a twentieth of a node's CPU per run. Invalid ones raise (not cached)."""
    from cluster.cron import parse_schedule

    parse_schedule(cron=value, timezone="UTC", hash_key="validate")


MAX_CALENDAR_REFS = 16


class CalendarRef(Strict):
    """A schedule's ``calendar:`` (``cluster.calendars``, D236): skip the days of any ``skip``
    calendar; with ``only``, fire only on a day of one of the ``only`` calendars."""

    skip: list[Name] = Field(default_factory=list, max_length=MAX_CALENDAR_REFS)
    only: list[Name] = Field(default_factory=list, max_length=MAX_CALENDAR_REFS)

    def names(self) -> list[str]:
        return sorted({*self.skip, *self.only})


class DstSpec(Strict):
    """A cron schedule's daylight-saving policy (D220): ``gap`` for wall times a spring-forward
    transition skips, ``fold`` for the ones a fall-back transition repeats."""

    gap: Literal["shift", "skip"] = "shift"
    fold: Literal["auto", "first", "both"] = "auto"


class ScheduleSpec(Strict):
    cron: str | None = Field(default=None, max_length=256)
    at: datetime | None = None
    timezone: str = "UTC"
    parameters: Params = Field(default_factory=dict)
    enabled: bool = True
    deadlines: Deadlines | None = None  # overrides the job's, field by field (D229)
    # days to skip or to keep to (named calendars of the project or the cluster); not part of
    # the fingerprint: changing it keeps the schedule's fire state
    calendar: CalendarRef | None = None
    dst: DstSpec | None = None  # None: the defaults (shift, auto)
    # waits on other jobs' or workflows' slots (D291-D296); not part of the fingerprint either
    depends_on: list[Dependency] = Field(default_factory=list, max_length=MAX_DEPENDS)
    not_before: Gate = None  # "HH:MM" in `timezone`
    max_wait: MaxWait = 0  # 0: a day (MAX_WAIT_DEFAULT); deadlines end a waiting slot first

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value: str) -> str:
        from cluster.cron import validate_timezone

        validate_timezone(value)
        return value

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is not None:
            _check_cron(value)
        return value

    @field_validator("at")
    @classmethod
    def _at(cls, value: datetime | None) -> datetime | None:
        # any zone's offset must still give a UTC time Python can hold (years 1..9999)
        if value is not None and not 2 <= value.year <= 9998:
            raise ValueError("at must lie between the years 2 and 9998")
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> ScheduleSpec:
        if (self.cron is None) == (self.at is None):
            raise ValueError("a schedule needs exactly one of 'cron' or 'at'")
        if self.dst is not None and (self.at is not None or self._every()):
            raise SubFieldError("applies to cron expressions only (not 'at' or '@every')", "dst")
        return self

    def _every(self) -> bool:
        return self.cron is not None and self.cron.lstrip()[:6].lower() == "@every"

    def parse(self, hash_key: str) -> Schedule:
        """This schedule, parsed with its DST policy: what every place that computes its fire
        times uses (planner, catch-up, backfill, ticks view, workflows)."""
        from cluster.cron import DstPolicy, parse_schedule

        dst = DstPolicy(self.dst.gap, self.dst.fold) if self.dst is not None else None
        return parse_schedule(
            cron=self.cron, at=self.at, timezone=self.timezone, hash_key=hash_key, dst=dst
        )

    def fingerprint(self) -> str:
        """Identity of a schedule: its fire state survives reordering, while a changed expression,
        time zone or parameter set starts afresh (two schedules with the same timing but
        different parameters are distinct)."""
        params = ",".join(f"{k}={v}" for k, v in sorted(self.parameters.items()))
        basis = f"{self.cron}|{self.at.isoformat() if self.at else ''}|{self.timezone}|{params}"
        if self.dst is not None and (self.dst.gap, self.dst.fold) != ("shift", "auto"):
            basis += f"|dst={self.dst.gap},{self.dst.fold}"  # the defaults keep old identities
        return hashlib.sha1(basis.encode()).hexdigest()[:10]


class PythonTarget(Strict):
    callable: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$", max_length=256)
    args: list[Any] = Field(default_factory=list)
    kwargs: dict[str, Any] = Field(default_factory=dict)


class Target(Strict):
    """Where runs may go: the nodes bound to ``group`` (weighted) and/or matching ``selector``."""

    group: str | None = Field(default=None, pattern=NAME_PATTERN)
    selector: str = Field(default="", max_length=1024)

    @field_validator("selector")
    @classmethod
    def _selector(cls, value: str) -> str:
        from cluster.selector import parse_selector

        parse_selector(value)
        return value


USER_NAME_PATTERN = r"^[a-z_][a-z0-9_.\-]{0,31}$"


class RunAs(Strict):
    """Which user (and group) a job's process runs as (docs/security.md, D142). The project must
    allow ``user`` (a cluster admin sets ``run_as_users`` on the project) and the node must be
    allowed to run jobs as it; ``group`` defaults to the user's primary group."""

    user: str = Field(pattern=USER_NAME_PATTERN)
    group: str | None = Field(default=None, pattern=USER_NAME_PATTERN)


class JobSpec(Strict):
    """What a user writes: the job document of the API and of ``cronmesh job apply``."""

    name: Name
    description: str = Field(default="", max_length=4096)
    command: str | None = Field(default=None, min_length=1, max_length=MAX_COMMAND)
    python: PythonTarget | None = None
    schedules: list[ScheduleSpec] = Field(default_factory=list, max_length=MAX_SCHEDULES)
    max_runs: int = Field(default=0, ge=0)
    parameters: Params = Field(default_factory=dict)
    timeout: Timeout = 0
    retries: int = Field(default=0, ge=0, le=100)
    retry_interval: RetryInterval = 10
    retry_backoff: float = Field(default=1.0, ge=1.0, le=10.0)
    overlap: Overlap = "allow"
    max_parallel: int = Field(default=0, ge=0, le=1000)
    catchup: Catchup = "latest"
    starting_deadline: Duration = 0
    catchup_limit: int = Field(default=100, ge=1, le=10_000)
    priority: int = Field(default=0, ge=-1000, le=1000)
    tags: list[Annotated[str, Field(max_length=64)]] = Field(default_factory=list, max_length=64)
    # budgets joined by name (D274); budgets matching a tag of ``tags`` apply as well
    budgets: list[Name] = Field(default_factory=list, max_length=8)
    target: Target = Field(default_factory=Target)
    run_as: RunAs | None = None  # None: the node's default user (D142)
    # Variables of the run's process: plain values, or {secret: name} (injected at start).
    env: Env = Field(default_factory=dict)
    kill_grace: KillGrace = 10
    keep_runs: int = Field(default=100, ge=1, le=100_000)
    # None: the project's default notifications apply; []: none for this job.
    notifications: list[NotificationRule] | None = Field(default=None, max_length=32)
    keep_days: float = Field(default=0, ge=0, le=36_500)  # 0: no age limit (issue 3)
    resources: Resources | None = None  # limits of each run's cgroup (D153)
    # per slot (a schedule's own win); expected_every: freshness of an unscheduled job (D229)
    deadlines: Deadlines | None = None
    expected_every: Duration = 0
    enabled: bool = True

    _command = field_validator("command")(no_nul)

    @model_validator(mode="after")
    def _one_action(self) -> JobSpec:
        if (self.command is None) == (self.python is None):
            raise ValueError("a job needs exactly one of 'command' or 'python'")
        if self.expected_every and self.schedules:
            raise SubFieldError(
                "is for jobs run by triggers or the API only; a scheduled job sets deadlines",
                "expected_every",
            )
        if self.expected_every and self.expected_every < 60:
            raise SubFieldError("must be at least 60 s", "expected_every")
        size = len(self.model_dump_json())
        if size > MAX_JOB_BYTES:
            raise ValueError(f"the job document is {size} bytes; at most {MAX_JOB_BYTES} allowed")
        return self


READ_ONLY_JOB_FIELDS = ("project", "created_at", "updated_at", "active_since")


class Scheduled(Protocol):
    """A job or a workflow as its schedules go (``Active``: as stored, with ``active_since``)."""

    @property
    def enabled(self) -> bool: ...

    @property
    def schedules(self) -> list[ScheduleSpec]: ...


class Active(Scheduled, Protocol):
    @property
    def active_since(self) -> datetime: ...


def active_since(old: Active | None, new: Scheduled, now: datetime) -> datetime:
    """When a job or workflow written ``now`` is active from (D6): the old document's instant
    while its enabled schedules stay the same (in any order, as their fire state survives
    reordering, D490) and it stays enabled (or is disabled); ``now`` at creation, when it is
    enabled again and when its enabled schedules change."""
    if old is None:
        return now
    same = sorted(s.fingerprint() for s in old.schedules if s.enabled) == sorted(
        s.fingerprint() for s in new.schedules if s.enabled
    )
    return old.active_since if same and (old.enabled or not new.enabled) else now


class Job(JobSpec):
    """A stored job: the spec plus what the server keeps about it."""

    project: Name
    created_at: datetime
    updated_at: datetime
    # Ticks before this instant never fire: set at creation, when the job is enabled again, and
    # when its schedules change (so a re-enabled job does not catch up its disabled period).
    active_since: datetime

    def spec(self) -> JobSpec:
        """The spec part, without validating it again (a stored job was validated when it was
        read; re-parsing its cron expressions for every run it creates was a hot path)."""
        names = JobSpec.model_fields
        return JobSpec.model_construct(
            _fields_set=self.model_fields_set & names.keys(),
            **{name: getattr(self, name) for name in names},
        )


class Attempt(BaseModel):
    attempt: int
    status: RunStatus
    node: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    exit_code: int | None = None
    signal: int | None = None
    error: str | None = None
    claim_revision: int | None = None
    log: str | None = None  # where the attempt's log object is (s3://… or file://…)
    # Bytes the job wrote to stdout and stderr (None: unknown, e.g. its node was lost). An
    # attempt that wrote nothing (0, and no ``log``) has no log object: its log is empty.
    output_bytes: int | None = None
    # Why it ended, beyond its status: "oom_killed" (status failed; the out-of-memory killer
    # killed a process of the run's cgroup), "interrupted" (status cancelled: its node was told to
    # stop at once while it drained, D245). None otherwise.
    reason: str | None = None
    # From the run's cgroup (None where the node has no cgroups): the most memory its processes
    # held at once (bytes) and the CPU time they used (user + system, seconds).
    peak_memory: int | None = None
    cpu_seconds: float | None = None


class Run(BaseModel):
    id: str
    project: str
    job: str
    status: RunStatus = "pending"
    attempt: int = 1
    node: str | None = None
    source: RunSource
    schedule: str | None = None  # fingerprint of the schedule that fired it
    scheduled_at: datetime | None = None
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    not_before: datetime | None = None  # a retry waits until then
    exit_code: int | None = None
    signal: int | None = None
    result: Any = None
    error: str | None = None
    reason: str | None = None  # of the latest attempt: "oom_killed", "interrupted" or None
    parameters: dict[str, str] = Field(default_factory=dict)
    claim_revision: int | None = None
    attempts: list[Attempt] = Field(default_factory=list)
    snapshot: Annotated[JobSpec, snapshot_field(JobSpec)]  # validated once (D422, D450)
    # A task attempt of a workflow execution (docs/workflows.md); env: upstream results.
    execution: str | None = None
    task: str | None = None
    env: dict[str, str] = Field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


def run_parameters_capped(value: dict[str, str]) -> dict[str, str]:
    """The parameters one request adds to a run: at most ``MAX_RUN_PARAMETER_BYTES`` (D173)."""
    from cluster.limits import MAX_RUN_PARAMETER_BYTES, parameter_bytes

    size = parameter_bytes(value)
    if size > MAX_RUN_PARAMETER_BYTES:
        raise ValueError(
            f"parameters hold {size} bytes; a run takes at most {MAX_RUN_PARAMETER_BYTES}"
        )
    return value


class TriggerRequest(Strict):
    parameters: Params = Field(default_factory=dict)

    _capped = field_validator("parameters")(run_parameters_capped)


class BackfillRequest(Strict):
    from_: datetime = Field(alias="from")
    to: datetime

    @field_validator("from_", "to")
    @classmethod
    def _sane(cls, value: datetime) -> datetime:
        if value.year < 1970:
            raise ValueError("must not be before 1970")
        return value

    @model_validator(mode="after")
    def _order(self) -> BackfillRequest:
        for name in ("from_", "to"):
            if getattr(self, name).tzinfo is None:
                setattr(self, name, getattr(self, name).replace(tzinfo=UTC))
        if self.to < self.from_:
            raise ValueError("'to' must not be before 'from'")

        return self


def now_utc() -> datetime:
    return datetime.now(UTC)


def validation_to_error(exc: ValidationError, model: type[BaseModel] | None = None) -> InvalidInput:
    """The first pydantic error as one InvalidInput naming the field; an unknown field of a
    ``model`` document says which one was likely meant (D506)."""
    err = exc.errors()[0]
    field = ".".join(str(p) for p in err.get("loc", ()) if p != "from_") or None
    if err.get("loc") and err["loc"][-1] == "from_":
        field = ".".join([*map(str, err["loc"][:-1]), "from"])
    msg = str(err.get("msg", "invalid"))
    ctx_err = (err.get("ctx") or {}).get("error")
    if isinstance(ctx_err, InvalidSchedule):
        msg = ctx_err.message
    elif isinstance(ctx_err, SubFieldError):
        msg = ctx_err.message
        field = f"{field}.{ctx_err.sub}" if field else ctx_err.sub
    elif msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if (
        err.get("type") == "string_pattern_mismatch"
        and (err.get("ctx") or {}).get("pattern") == NAME_PATTERN
    ):
        msg = f"{err.get('input')!r} is not a valid name: {NAME_RULE}"  # D508
    if err.get("type") == "extra_forbidden":
        msg = "unknown field"
        if model is not None:
            msg += unknown_field_hint(model, tuple(err.get("loc", ())))
    return InvalidInput(f"{field}: {msg}" if field else msg, field=field)


def parse_model(model: type[M], data: Any) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_to_error(exc, model) from None
