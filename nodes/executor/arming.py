"""A job's process spawned ahead of its instant and held (armed) until one write on its stdin
releases it (D121): the argv that holds it, and the exit status of one never released (the
clean-up of a spawned child that cannot be supervised is ``nodes.executor.child.abandon``)."""

from __future__ import annotations

ARMED_EXIT = 125
"""Exit status of an armed process whose node went away (or disarmed it) before its release."""

# Reads one line from stdin (the node's go pipe): end of file means the node is gone or gave
# up, and nothing runs. Then stdin is /dev/null again, as for any job, and the command runs:
# a shell command in this very shell (no second exec: ``eval`` of ``sh -c``'s string, with no
# positional parameter and no variable of ours left), any other argv through exec.
_GO = f"IFS= read -r _ || exit {ARMED_EXIT}; exec </dev/null; "
_ARMED_SH = _GO + '__cronmesh_cmd=$1; shift; eval "unset __cronmesh_cmd; $__cronmesh_cmd"'
_ARMED_EXEC = _GO + 'exec "$@"'


def armed_argv(argv: list[str]) -> list[str]:
    """``argv`` held until released: the process is spawned ahead and, at the due instant, one
    write on its stdin starts the command, so starting a burst costs the node a write per run
    instead of a spawn per run at that instant."""
    if len(argv) == 3 and argv[0] == "/bin/sh" and argv[1] == "-c":
        return ["/bin/sh", "-c", _ARMED_SH, "sh", argv[2]]
    return ["/bin/sh", "-c", _ARMED_EXEC, "sh", *argv]
