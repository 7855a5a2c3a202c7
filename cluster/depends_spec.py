"""The ``depends_on``, ``not_before`` and ``max_wait`` fields of a schedule (D291): the shapes
only, checked field by field (``cluster.models`` imports this; the rules are in
``cluster.depends``)."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from cluster.deadlines import duration_seconds
from cluster.fields import NAME_PATTERN

MAX_DEPENDS = 8  # upstreams per schedule
MAX_WINDOW = 31 * 86400  # a duration window
MAX_WAIT_DEFAULT = 86400.0  # a waiting slot without deadlines ends after this long
MAX_WAIT_LIMIT = 7 * 86400
MAX_UPSTREAM_SLOTS = 1000  # upstream slots looked at per dependency and window
MAX_CHAIN = 48  # documents read to look for a cycle at write; each is a compare of the write
# (etcd: ≤ 128 compares; with ≤ 64 secrets, 8 budgets, the document and its group: D333)
GATE = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")
_WINDOWS = "same_day, previous_slot or a duration (90s, 15m, 2h, 1d)"

Require = Literal["all_succeeded", "any_succeeded", "finished"]


def _window(value: Any) -> Any:
    if value in ("same_day", "previous_slot"):
        return value
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"must be {_WINDOWS}")
    try:
        seconds = duration_seconds(value)
    except ValueError:  # a word the user meant as a window: say which words there are
        raise ValueError(f"{value!r} is not {_WINDOWS}") from None
    if not 0 < seconds <= MAX_WINDOW:
        raise ValueError(f"a duration window must lie in (0, {MAX_WINDOW // 86400}d]")
    return value if isinstance(value, str) else f"{seconds:g}s"


def _max_wait(value: float) -> float:
    if not 0 <= value <= MAX_WAIT_LIMIT:  # in the unit the user wrote, not seconds alone
        raise ValueError(f"must lie in [0, {MAX_WAIT_LIMIT // 86400}d] ({MAX_WAIT_LIMIT} s)")
    return value


def _gate(value: str | None) -> str | None:
    if value is not None and not GATE.match(value):
        raise ValueError(f'{value!r} is not a wall time "HH:MM" (00:00 to 23:59)')
    return value


MaxWait = Annotated[
    float,
    BeforeValidator(duration_seconds),
    Field(allow_inf_nan=False),
    AfterValidator(_max_wait),
]
Gate = Annotated[str | None, AfterValidator(_gate)]


class Dependency(BaseModel):
    """One upstream of a schedule: a job or a workflow of the same project."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    job: str | None = Field(default=None, pattern=NAME_PATTERN)
    workflow: str | None = Field(default=None, pattern=NAME_PATTERN, validate_default=True)
    window: Annotated[str, BeforeValidator(_window)] = "same_day"
    require: Require = "all_succeeded"

    @model_validator(mode="before")
    @classmethod
    def _mapping(cls, value: Any) -> Any:
        # a workflow task's depends_on is a list of names: say how an upstream is written here
        if isinstance(value, str):
            raise ValueError(
                f"write {{job: {value}}} or {{workflow: {value}}}, not a bare name "
                "(an upstream is {job: NAME | workflow: NAME, window, require})"
            )
        if not isinstance(value, (dict, Dependency)):
            raise ValueError("an upstream is {job: NAME | workflow: NAME, window, require}")
        return value

    @field_validator("workflow")
    @classmethod
    def _one(cls, value: str | None, info: ValidationInfo) -> str | None:
        if (value is None) == (info.data.get("job") is None) and "job" in info.data:
            raise ValueError("give exactly one of 'job' or 'workflow'")
        return value

    @property
    def upstream(self) -> Upstream:
        return ("workflow", self.workflow) if self.workflow else ("job", self.job or "")


Upstream = tuple[str, str]  # ("job" | "workflow", name)


def label(node: Upstream) -> str:
    return node[1] if node[0] == "job" else f"workflow:{node[1]}"
