"""The ``depends_on``, ``not_before`` and ``max_wait`` fields of a schedule (D291): the shapes
only, checked field by field (``cluster.models`` imports this; the rules are in
``cluster.depends``)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationInfo, field_validator

from cluster.deadlines import duration_seconds

MAX_DEPENDS = 8  # upstreams per schedule
MAX_WINDOW = 31 * 86400  # a duration window
MAX_WAIT_DEFAULT = 86400.0  # a waiting slot without deadlines ends after this long
MAX_WAIT_LIMIT = 7 * 86400
MAX_UPSTREAM_SLOTS = 1000  # upstream slots looked at per dependency and window
MAX_CHAIN = 48  # documents read to look for a cycle at write; each is a compare of the write
# (etcd: ≤ 128 compares; with ≤ 64 secrets, 8 budgets, the document and its group: D333)
NAME = r"^[a-z0-9][a-z0-9\-_.]{0,62}$"  # cluster.models.NAME_PATTERN (models imports us)
GATE = r"^([01]\d|2[0-3]):[0-5]\d$"

Require = Literal["all_succeeded", "any_succeeded", "finished"]


def _window(value: Any) -> Any:
    if value in ("same_day", "previous_slot"):
        return value
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError("must be same_day, previous_slot or a duration (90s, 15m, 2h, 1d)")
    seconds = duration_seconds(value)
    if not 0 < seconds <= MAX_WINDOW:
        raise ValueError(f"a duration window must lie in (0, {MAX_WINDOW // 86400}d]")
    return value if isinstance(value, str) else f"{seconds:g}s"


MaxWait = Annotated[
    float, BeforeValidator(duration_seconds), Field(ge=0, le=MAX_WAIT_LIMIT, allow_inf_nan=False)
]


class Dependency(BaseModel):
    """One upstream of a schedule: a job or a workflow of the same project."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    job: str | None = Field(default=None, pattern=NAME)
    workflow: str | None = Field(default=None, pattern=NAME, validate_default=True)
    window: Annotated[str, BeforeValidator(_window)] = "same_day"
    require: Require = "all_succeeded"

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
