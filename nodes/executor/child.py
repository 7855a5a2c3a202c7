"""A job's process spawned with pipes the node makes itself, kept as bare descriptors (D495).

``subprocess.Popen(stdin=PIPE, stdout=PIPE, stderr=PIPE)`` wraps each of its three pipes in a file
object (``io.open``: a ``FileIO`` and a buffered reader or writer, each ``fstat``, ``isatty`` and
``lseek`` on the descriptor): nine system calls and six objects per spawn that the node never
uses — it reads the output with ``os.read`` and writes its one "go" line with ``os.write``.
In the ``cgroup-io`` threads each such call lets the GIL go and takes it back from the busy loop.
:func:`spawn` makes the pipes with ``os.pipe`` (close-on-exec, as ``Popen`` makes them) and gives
``Popen`` the child's ends as descriptors, so it wraps nothing; the spawn itself is unchanged
(``vfork`` + ``exec``, a new session, ``close_fds``, the cwd and umask). What the node keeps is a
:class:`Child`: the ``Popen`` (its pid, its returncode bookkeeping) and the node's three ends.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal as _signal
import subprocess


class Child:
    """A spawned process and the node's ends of its pipes: ``stdin`` (the go pipe of a held
    process, else None), ``stdout`` and ``stderr``. Whoever takes an end sets it to None here
    (:class:`~nodes.executor.process.Process` takes all three); :meth:`close` closes the rest."""

    __slots__ = ("popen", "stderr", "stdin", "stdout")

    def __init__(
        self, popen: subprocess.Popen[bytes], stdin: int | None, stdout: int, stderr: int
    ) -> None:
        self.popen = popen
        self.stdin: int | None = stdin
        self.stdout: int | None = stdout
        self.stderr: int | None = stderr

    @property
    def pid(self) -> int:
        return self.popen.pid

    def close(self) -> None:
        """Close the ends nobody took (idempotent): a held process's end of file on stdin."""
        for fd in (self.stdin, self.stdout, self.stderr):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.stdin = self.stdout = self.stderr = None


def spawn(
    argv: list[str], *, env: dict[str, str], cwd: str | None, umask: int, held: bool
) -> Child:
    """Spawn ``argv`` in a new session with its output on two pipes, and its stdin on a third
    when ``held`` (its go pipe), else /dev/null. Raises OSError when it cannot be started;
    nothing is left open then."""
    made: list[int] = []
    try:
        out_r, out_w = os.pipe()
        made += (out_r, out_w)
        err_r, err_w = os.pipe()
        made += (err_r, err_w)
        in_r: int | None = None
        in_w: int | None = None
        if held:
            in_r, in_w = os.pipe()
            made += (in_r, in_w)
        popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL if in_r is None else in_r,
            stdout=out_w,
            stderr=err_w,
            start_new_session=True,
            close_fds=True,
            env=env,
            cwd=cwd,
            umask=umask,
        )
    except BaseException:
        for fd in made:
            os.close(fd)
        raise
    for end in (in_r, out_w, err_w):  # the child's ends: its own now
        if end is not None:
            os.close(end)
    return Child(popen, in_w, out_r, err_r)


def abandon(child: Child) -> None:
    """Kill and reap a child we cannot supervise, closing what is left of its pipes (a start-up
    failure; a held one sees the end of file on its stdin and would exit 125 anyway)."""
    child.close()
    popen = child.popen
    with contextlib.suppress(OSError):
        os.killpg(popen.pid, _signal.SIGKILL)
    with contextlib.suppress(OSError):
        popen.kill()
    try:
        popen.wait(timeout=1.0)
    except subprocess.TimeoutExpired:
        pass
    except OSError as exc:
        if exc.errno != errno.ECHILD:
            raise
