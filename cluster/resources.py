"""``resources: {memory, cpu, pids}`` of a job or workflow task: parsing and ranges (pure).

Units follow Kubernetes: memory in bytes with ``k``/``M``/``G``/``T`` (powers of 1000) or
``Ki``/``Mi``/``Gi``/``Ti`` (powers of 1024); cpu in cores (``0.5``) or millicores (``500m``).
What is stored is the normalised value (bytes, cores), so a document written ``256Mi`` reads
back as ``268435456``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

MIN_MEMORY = 4 * 1024 * 1024
MAX_MEMORY = 16 * 1024**4
MIN_CPU = 0.01
MAX_CPU = 1024.0
MAX_PIDS = 4_194_304  # the kernel's pid_max ceiling

_MEMORY = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([kKMGT]i?|)\s*$")
_FACTORS = {
    "": 1,
    "k": 1000,
    "K": 1000,
    "M": 1000**2,
    "G": 1000**3,
    "T": 1000**4,
    "Ki": 1024,
    "Mi": 1024**2,
    "Gi": 1024**3,
    "Ti": 1024**4,
}


def parse_memory(value: Any) -> int:
    """``256Mi`` / ``1G`` / ``1048576`` → bytes, within [4 MiB, 16 TiB]; ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError("must be a size such as 256Mi, 1G or a number of bytes")
    if isinstance(value, int | float):
        number, unit = float(value), ""
        if not math.isfinite(number):
            raise ValueError("must be a finite size")
    elif isinstance(value, str):
        m = _MEMORY.match(value)
        if not m:
            raise ValueError(
                f"{value[:40]!r} is not a size: a number with an optional unit "
                "(k, M, G, T, Ki, Mi, Gi, Ti), e.g. 256Mi"
            )
        number, unit = float(m.group(1)), m.group(2)
    else:
        raise ValueError("must be a size such as 256Mi, 1G or a number of bytes")
    size = int(number * _FACTORS[unit])
    if not MIN_MEMORY <= size <= MAX_MEMORY:
        raise ValueError(f"must be between 4Mi and 16Ti (got {size} bytes)")
    return size


def parse_cpu(value: Any) -> float:
    """``0.5`` / ``"500m"`` / ``2`` → cores, within [0.01, 1024]; ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError("must be a number of cores such as 0.5, or millicores such as 500m")
    if isinstance(value, str):
        text = value.strip()
        try:
            cores = float(text[:-1]) / 1000 if text.endswith("m") else float(text)
        except ValueError:
            raise ValueError(
                f"{value[:40]!r} is not a cpu amount: cores (0.5) or millicores (500m)"
            ) from None
    elif isinstance(value, int | float):
        cores = float(value)
    else:
        raise ValueError("must be a number of cores such as 0.5, or millicores such as 500m")
    if not math.isfinite(cores) or not MIN_CPU <= cores <= MAX_CPU:
        raise ValueError(f"must be between {MIN_CPU} and {MAX_CPU:g} cores")
    return round(cores, 3)


def _optional(parse: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda value: None if value is None else parse(value)


class Resources(BaseModel):
    """Limits of one run's cgroup (docs/reference/jobs.md, ``resources``)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    memory: Annotated[int | None, BeforeValidator(_optional(parse_memory))] = None
    cpu: Annotated[float | None, BeforeValidator(_optional(parse_cpu))] = None
    pids: int | None = Field(default=None, ge=1, le=MAX_PIDS, strict=True)

    def asked(self) -> dict[str, float]:
        """The limits that were set, by name."""
        return {
            k: v
            for k, v in (("memory", self.memory), ("cpu", self.cpu), ("pids", self.pids))
            if v is not None
        }


def format_bytes(size: int | None) -> str:
    """1.5Gi-style display (CLI, UI)."""
    if size is None:
        return "-"
    value = float(size)
    for unit in ("", "Ki", "Mi", "Gi", "Ti"):
        if value < 1024 or unit == "Ti":
            return f"{value:.0f}{unit}" if unit == "" else f"{value:.1f}{unit}"
        value /= 1024
    return str(size)
