"""The field types and validators the documents share (``cluster.models``, ``workflows``,
``calendars``, ``budgets``, ...): names, parameters, a job's ``env`` with its secret references,
and ``Strict`` (a model that refuses unknown fields). Pure; it imports no other document module,
so any of them can use it.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

NAME_PATTERN = r"^[a-z0-9][a-z0-9\-_.]{0,62}$"
# What an error about a bad name tells its author (D508).
NAME_RULE = (
    "a name is 1-63 characters: lowercase letters, digits, '-', '_' or '.', starting with a"
    " letter or a digit"
)
PARAM_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


def _scalar_to_str(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


def _params(value: Any) -> Any:
    if isinstance(value, dict):
        for key in value:
            if not isinstance(key, str) or not PARAM_PATTERN.fullmatch(key):
                raise ValueError(
                    f"parameter name {key!r} must match [A-Za-z_][A-Za-z0-9_]* (max 64)"
                )
        out = {k: _scalar_to_str(v) for k, v in value.items()}
        for key, v in out.items():
            if isinstance(v, str) and "\0" in v:  # it goes into env: exec would fail on it
                raise ValueError(f"parameter {key!r}: a value cannot hold a NUL byte")
        return out
    return value


def no_nul(value: str | None) -> str | None:
    """A command goes to ``/bin/sh -c``: a NUL byte would fail the exec of every run."""
    if value is not None and "\0" in value:
        raise ValueError("a command cannot hold a NUL byte")
    return value


Params = Annotated[
    dict[str, Annotated[str, Field(max_length=4096)]],
    BeforeValidator(_params),
    Field(max_length=64),
]
Name = Annotated[str, Field(pattern=NAME_PATTERN)]

# The ``env:`` of jobs and tasks (D146): names a shell can use; ``CRONMESH_*`` is cronmesh's own
# (run variables, parameters, upstream results) and cannot be set.
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
RESERVED_ENV_PREFIX = "CRONMESH_"
MAX_ENV = 64
MAX_ENV_VALUE = 4096


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False, allow_inf_nan=False)


class SecretRef(Strict):
    """``{secret: name}``: the value of a project secret, read and decrypted by the worker when
    the run starts (never stored in the job, the run or the log)."""

    secret: Name


class SubFieldError(ValueError):
    """A validator's error about one part of its field (``env`` -> ``env.DB_PASSWORD.secret``)."""

    def __init__(self, message: str, sub: str) -> None:
        super().__init__(message)
        self.message = message
        self.sub = sub


def _env(value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    if len(value) > MAX_ENV:
        raise ValueError(f"at most {MAX_ENV} variables")
    out: dict[str, Any] = {}
    for key, item in value.items():
        if not isinstance(key, str) or not ENV_NAME.fullmatch(key):
            raise SubFieldError(
                f"variable name {key!r} must match [A-Za-z_][A-Za-z0-9_]* (max 128)", str(key)
            )
        if key.upper().startswith(RESERVED_ENV_PREFIX):
            raise SubFieldError("CRONMESH_* variables are set by cronmesh, not by env", key)
        item = _scalar_to_str(item)
        if isinstance(item, dict):
            name = item.get("secret")
            if set(item) != {"secret"} or not isinstance(name, str):
                raise SubFieldError("a value is a string or {secret: <name>}", key)
            if not re.fullmatch(NAME_PATTERN, name):
                raise SubFieldError(f"invalid secret name {name!r}", f"{key}.secret")
            item = SecretRef(secret=name)
        elif isinstance(item, str):
            if "\0" in item:
                raise SubFieldError("a value cannot hold a NUL byte", key)
            if len(item) > MAX_ENV_VALUE:
                raise SubFieldError(f"a value is at most {MAX_ENV_VALUE} characters", key)
        elif not isinstance(item, SecretRef):
            raise SubFieldError("a value is a string or {secret: <name>}", key)
        out[key] = item
    return out


EnvValue = Annotated[str, Field(max_length=MAX_ENV_VALUE)] | SecretRef
Env = Annotated[dict[str, EnvValue], BeforeValidator(_env)]
