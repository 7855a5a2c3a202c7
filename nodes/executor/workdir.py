"""Folders: the node's data folder kept private, and a private working folder per run (D143).

- The node process runs with umask 077 (``cronmesh node`` sets it): every file it creates (spool,
  local logs, anything later) is 0600 and every folder 0700. Jobs get the umask the node was
  started with, so what they write is as before.
- The data folder, the node's folder, the spool and the local log folder are 0700. The folders
  on the way to the work folder are 0711 instead (traverse, never list): a job running as
  another user must reach its own run folder, and nothing else there.
- Each run gets ``<work>/run-<id>-<attempt>``, 0700, owned by the run's user, as its working
  folder; its result file (``CRONMESH_RESULT_FILE``) is inside it. It is removed after the run.
  The node reads the result file without following symlinks and only if it is a regular file,
  since the run's user controls that folder.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import stat
from pathlib import Path

import structlog

from nodes.executor import spare_dirs

log = structlog.get_logger(__name__)

RESULT_NAME = ".cronmesh-result.json"
_RUN_DIR = re.compile(r"^run-[A-Za-z0-9_.\-]+-\d+$")
_job_umask = -1  # the umask jobs get; -1: inherit the node's (in-process nodes, tests)


def private_umask() -> None:
    """Make this process create private files (0600) and folders (0700); jobs keep the umask the
    process had (``job_umask``). Called once by ``cronmesh node``."""
    global _job_umask
    _job_umask = os.umask(0o077)


def job_umask() -> int:
    return _job_umask


def secure_dir(path: Path, mode: int) -> None:
    """Create ``path`` (and parents) and give it ``mode`` if this process owns it; a folder
    owned by someone else is left alone, with a warning."""
    path.mkdir(parents=True, exist_ok=True)
    st = path.stat()
    if stat.S_IMODE(st.st_mode) == mode:
        return
    if st.st_uid != os.geteuid() or st.st_mode & (stat.S_ISVTX | stat.S_IWOTH):
        # not ours, or a shared folder such as /tmp given as the data folder: never narrow it
        log.warning("folder not owned by the node alone; mode left as is", path=str(path))
        return
    os.chmod(path, mode)


def secure_node_dirs(data: Path, private: list[Path], work: Path) -> None:
    """0700 for the data folder and ``private`` ones, 0711 for the folders from the data folder
    down to ``work`` (and ``work`` itself): runs as other users reach their own folder there."""
    data, work = data.resolve(), work.resolve()
    traverse = {work}
    if work.is_relative_to(data):
        traverse.update(p for p in work.parents if p.is_relative_to(data))
    for path in (data, *(p.resolve() for p in private)):
        if path not in traverse:
            secure_dir(path, 0o700)
    for path in sorted(traverse, key=lambda p: len(p.parts)):
        secure_dir(path, 0o711)
    closed = [p for p in work.parents if not p.stat().st_mode & stat.S_IXOTH]
    if closed and os.geteuid() == 0:
        log.warning(
            "jobs running as other users cannot reach their run folders: a folder above the "
            "work folder is closed to them (make it 0711, or set work_dir elsewhere)",
            folder=str(closed[0]),
        )


def run_dir(work: Path, run_id: str, attempt: int) -> Path:
    return work / f"run-{run_id}-{attempt}"


def make_run_dir(path: Path, uid: int | None, gid: int | None) -> None:
    """A fresh private folder for one attempt, owned by the run's user (``uid``/``gid``; None:
    the node's). A leftover of an earlier process with the same name is removed first."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        remove_run_dir(path)
        os.mkdir(path, 0o700)
    os.chmod(path, 0o700)  # whatever the umask
    if uid is not None and gid is not None:
        os.chown(path, uid, gid)


def remove_run_dir(path: Path) -> None:
    """Remove a run's folder: one ``rmdir`` when the job left it empty, else the whole tree
    (``shutil.rmtree`` works on file descriptors, so links the job left are not followed)."""
    try:
        os.rmdir(path)
        return
    except FileNotFoundError:
        return
    except OSError as exc:
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise
    shutil.rmtree(path, ignore_errors=True)


def clean_leftovers(work: Path, spares: int = spare_dirs.SPARE_KEPT) -> int:
    """Remove run folders an earlier process of this node left behind (it died); only names this
    module creates are touched (and the emptied folders it kept, D423; from now on at most
    ``spares`` are kept, D464). Returns how many."""
    spare_dirs.forget(work, spares)
    count = 0
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(work):
            if _RUN_DIR.match(entry.name) and entry.is_dir(follow_symlinks=False):
                remove_run_dir(Path(entry.path))
                count += 1
    return count


def read_result(path: Path, limit: int) -> tuple[bytes | None, str | None]:
    """The bytes of a run's result file, or why they cannot be used: never through a symlink
    or a hard link, only a regular file, at most ``limit`` bytes. (None, None): there is no result
    file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return None, "the result file is a symbolic link; ignored"
        return None, f"cannot read the result file: {exc}"
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None, "the result file is not a regular file; ignored"
        if st.st_nlink != 1:  # a hard link to a file of the node's, read as root (D504)
            return None, "the result file has other links; ignored"
        if st.st_size > limit:
            return None, f"result file larger than {limit} bytes; ignored"
        chunks = []
        left = limit + 1
        while left > 0:
            chunk = os.read(fd, min(left, 65536))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        data = b"".join(chunks)
        if len(data) > limit:
            return None, f"result file larger than {limit} bytes; ignored"
        return data, None
    except OSError as exc:
        return None, f"cannot read the result file: {exc}"
    finally:
        os.close(fd)
