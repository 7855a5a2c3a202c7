"""What a job's process sees of its node's environment, and the node keeping its own secrets.

A job gets an environment built from an allow-list (D140), never a copy of the node's: ``PATH``,
``HOME``, ``LANG``, ``LC_*`` and ``TZ``, the variables the operator names
(``job_env_passthrough``) or sets (``job_env``), then the run's own variables on top (added by
the worker: ``CRONMESH_*``, parameters, workflow-task variables, referenced secrets).

The node itself reads its secrets once, at start (values or ``*_FILE`` files, see
``nodes.config_sources``), then removes the variables that held them from its environment, including
the copy the kernel shows in ``/proc/<pid>/environ`` (D141).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
ALLOWED = ("PATH", "HOME", "LANG", "TZ")
ALLOWED_PREFIXES = ("LC_",)
# The folder that holds the ``nodes`` package: a Python-target job imports
# ``nodes.executor.pyjob`` from it.
SOURCE_ROOT = str(Path(__file__).resolve().parents[2])


def base_env(
    environ: Mapping[str, str],
    *,
    extra: Mapping[str, str] | None = None,
    passthrough: Iterable[str] = (),
) -> dict[str, str]:
    """The node's part of every job's environment (computed once per node, copied per run)."""
    env = {
        name: value
        for name, value in environ.items()
        if name in ALLOWED or name.startswith(ALLOWED_PREFIXES)
    }
    env.setdefault("PATH", DEFAULT_PATH)
    for name in passthrough:
        if name in environ:
            env[name] = environ[name]
    env.update(extra or {})
    return env


def python_path(environ: Mapping[str, str]) -> str:
    """``PYTHONPATH`` of a Python-target job: cronmesh's own source folder
    (``nodes.executor.pyjob``), then the node's ``PYTHONPATH`` (where the node finds the
    callables it was deployed with)."""
    parts = [SOURCE_ROOT, *(p for p in environ.get("PYTHONPATH", "").split(os.pathsep) if p)]
    return os.pathsep.join(dict.fromkeys(parts))


def scrub_secrets(names: Iterable[str]) -> list[str]:
    """Remove the variables ``names`` from this process's environment: from ``os.environ`` (and
    so from what children inherit) and from the block the kernel shows in
    ``/proc/self/environ``, which no ``unsetenv`` touches. Returns the names removed."""
    removed = [name for name in names if os.environ.pop(name, None) is not None]
    if removed:
        _wipe_initial_environ(removed)
    return removed


PR_SET_DUMPABLE, PR_GET_DUMPABLE = 4, 3


def protect_process() -> bool:
    """Make this process non-dumpable (``prctl(PR_SET_DUMPABLE, 0)``): its ``/proc/<pid>`` files
    then belong to root, and a process of the same user — a job on a node that does not switch
    users — can neither ``ptrace`` it nor read its memory or environment. No core dumps; jobs
    are not affected (``exec`` resets the flag). Returns whether it took effect."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE) failed")
        return bool(libc.prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) == 0)
    except (OSError, AttributeError) as exc:
        log.warning("cannot make the node process non-dumpable", error=str(exc))
        return False


def _wipe_initial_environ(names: list[str]) -> None:
    """Overwrite ``NAME=value`` of ``names`` in the environment block the process was started
    with (on its stack, between ``env_start`` and ``env_end`` of ``/proc/self/stat``).

    ``unsetenv`` already removed their pointers from libc's ``environ`` (Python reads its own
    copy at start), so nothing references these bytes any more. The entry becomes a run of
    ``NUL``s, which ``/proc/self/environ`` readers see as empty entries. Best effort: if the
    block cannot be found the node logs it and runs on (the values are gone from ``os.environ``
    either way)."""
    try:
        stat = Path("/proc/self/stat").read_text()
        fields = stat.rsplit(")", 1)[1].split()
        # fields[0] is field 3 (state); env_start and env_end are fields 50 and 51 (proc(5))
        start, end = int(fields[47]), int(fields[48])
    except (OSError, IndexError, ValueError) as exc:
        log.warning("cannot locate the initial environment to wipe it", error=str(exc))
        return
    if not 0 < start < end or end - start > 64 * 1024 * 1024:
        log.warning("implausible initial environment bounds; not wiped", start=start, end=end)
        return
    block = ctypes.string_at(start, end - start)
    wanted = tuple(f"{name}=".encode() for name in names)
    offset = 0
    for entry in block.split(b"\0"):
        if entry.startswith(wanted):
            ctypes.memset(start + offset, 0, len(entry))
        offset += len(entry) + 1


def environ_of(pid: int) -> dict[str, str]:
    """What ``/proc/<pid>/environ`` shows (tests and diagnostics)."""
    out: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for entry in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
            name, sep, value = entry.decode(errors="replace").partition("=")
            if sep:
                out[name] = value
    return out
