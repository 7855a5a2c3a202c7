"""A job's process spawned with the node's own pipes, kept as bare descriptors (D495)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nodes.executor.arming import ARMED_EXIT, armed_argv
from nodes.executor.child import abandon, spawn

ENV = {"PATH": "/usr/bin:/bin"}


def _fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def _read_all(fd: int) -> bytes:
    out = b""
    while chunk := os.read(fd, 65536):
        out += chunk
    return out


def test_a_held_child_has_three_bare_pipes_and_runs_once_released(tmp_path: Path) -> None:
    before = _fds()
    child = spawn(
        armed_argv(["/bin/sh", "-c", "pwd; echo oops >&2"]),
        env=ENV,
        cwd=str(tmp_path),
        umask=0o077,
        held=True,
    )
    # Popen wrapped none of them in a file object (before D495: three, with their fstat,
    # isatty and lseek in the cgroup-io thread)
    popen = child.popen
    assert (popen.stdin, popen.stdout, popen.stderr) == (None, None, None)
    assert all(isinstance(fd, int) for fd in (child.stdin, child.stdout, child.stderr))
    assert child.stdin is not None and child.stdout is not None and child.stderr is not None
    os.write(child.stdin, b"go\n")
    assert _read_all(child.stdout) == f"{tmp_path}\n".encode()
    assert _read_all(child.stderr) == b"oops\n"
    assert popen.wait(timeout=10) == 0
    child.close()
    child.close()  # idempotent: a number closed twice could be another file's by then
    assert _fds() == before


def test_a_child_not_held_reads_dev_null() -> None:
    child = spawn(["/bin/sh", "-c", "cat; echo done"], env=ENV, cwd=None, umask=-1, held=False)
    assert child.stdin is None and child.stdout is not None
    assert _read_all(child.stdout) == b"done\n"
    assert child.popen.wait(timeout=10) == 0
    child.close()


def test_a_child_abandoned_or_never_started_leaves_nothing_open(tmp_path: Path) -> None:
    before = _fds()
    child = spawn(armed_argv(["/bin/true"]), env=ENV, cwd=str(tmp_path), umask=-1, held=True)
    abandon(child)  # held: killed (or exits 125 on its stdin's end of file), reaped
    assert child.popen.returncode in (-9, ARMED_EXIT)
    assert _fds() == before
    with pytest.raises(FileNotFoundError):  # the cwd's error, not a pipe closed twice
        spawn(["/bin/true"], env=ENV, cwd=str(tmp_path / "gone"), umask=-1, held=True)
    assert _fds() == before
