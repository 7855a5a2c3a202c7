"""``deadlines: {start_within, succeed_within}`` and durations (``90s``, ``15m``, ``2h``, ``1d``)
of jobs, schedules and workflows (D229): parsing and ranges (pure). What is stored is seconds."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationInfo, field_validator

MAX_DEADLINE = 366 * 86400
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


def duration_seconds(value: Any) -> Any:
    """``90``, ``"90s"``, ``"15m"``, ``"2h"``, ``"1d"`` → seconds (other values are left to the
    field's own check, which names the field)."""
    if isinstance(value, str):
        m = _DURATION.match(value)
        if m is None:
            raise ValueError(f"{value!r} is not a duration (seconds, or a number with s, m, h, d)")
        return float(m.group(1)) * _UNIT[m.group(2)]
    return value


Duration = Annotated[float, BeforeValidator(duration_seconds), Field(ge=0, le=MAX_DEADLINE)]
# the other durations of a job, a task and a workflow take the same forms (D516); stored as seconds
Timeout = Annotated[float, BeforeValidator(duration_seconds), Field(ge=0, le=30 * 86400)]
RetryInterval = Annotated[float, BeforeValidator(duration_seconds), Field(ge=0, le=86400)]
KillGrace = Annotated[float, BeforeValidator(duration_seconds), Field(ge=0, le=3600)]


class Deadlines(BaseModel):
    """When a slot must have started / succeeded, counted from its fire time; 0: none."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    start_within: Duration = 0
    succeed_within: Duration = 0

    @field_validator("succeed_within")
    @classmethod
    def _order(cls, value: float, info: ValidationInfo) -> float:
        start = info.data.get("start_within") or 0
        if value and start > value:
            raise ValueError("must not be shorter than start_within")
        return value

    def pair(self) -> tuple[float, float]:
        return (self.start_within, self.succeed_within)
