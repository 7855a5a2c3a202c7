"""A run's emptied folder kept for the next run (D423) carries nothing of the previous run.

Attacks, each by what a job can do to the folder it owns, with real folders, real users and (for
the run end to end) real cgroups and processes:

- a job leaves a file (a planted script, a symlink to a secret) in its folder for whoever gets
  the folder next: the folder is not kept; the next run's folder is a new, empty one;
- a job opens its folder to everyone (mode 0777, setgid) so another user can write into the next
  run's: the folder is 0700 again before it is kept, and handed out 0700;
- a job sets an extended attribute or a default ACL on its folder (data carried over, or
  permissions given away on the next run's files): the folder is not kept;
- a process of the same user that still holds the folder open (another run of that user, or a
  descendant that escaped) adds a file after the run ended: refused, since the folder is the
  node's (owner, 0700) from the moment it is given back;
- the next run, of another user, gets the folder as a new one: its user's, 0700, fresh times.
"""

from __future__ import annotations

import asyncio
import os
import stat
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nodes.executor import launch, spare_dirs, workdir
from nodes.executor.cgroup_pool import CgroupPool
from nodes.executor.cgroups import Layout
from nodes.executor.spare_dirs import SpareDirs
from tests.launching import cgroup_layout, run_in
from tests.unit.test_cgroups import SHAPES

NOBODY = 65534

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="runs as other users need root")


def _given(work: Path, name: str, uid: int | None = NOBODY) -> Path:
    """A run's folder as the node makes it for a run of ``uid`` (None: the node's own)."""
    path = workdir.run_dir(work, name, 1)
    workdir.make_run_dir(path, uid, uid)
    return path


def _as_nobody(code: str, folder: int) -> subprocess.CompletedProcess[str]:
    """``code`` run as user nobody, holding ``folder`` open as ``FD`` (the way in: the folders
    above a test's are closed to other users)."""
    return subprocess.run(
        [
            sys.executable,
            "-c",
            f"import os\nos.setgid({NOBODY})\nos.setuid({NOBODY})\nFD = {folder}\n{code}",
        ],
        pass_fds=(folder,),
        capture_output=True,
        text=True,
        timeout=30,
    )


def _opened(path: Path) -> int:
    return os.open(path, os.O_RDONLY | os.O_DIRECTORY)


PLANT = "os.close(os.open('run.sh', os.O_CREAT | os.O_WRONLY, dir_fd=FD))"


def _work(tmp_path: Path) -> Path:
    work = tmp_path / "work"
    work.mkdir(mode=0o711)
    os.chmod(tmp_path, 0o711)
    return work


def test_a_folder_with_anything_left_in_it_is_not_kept(tmp_path: Path) -> None:
    work = _work(tmp_path)
    spares = SpareDirs(work)
    path = _given(work, "planted")
    fd = _opened(path)
    done = _as_nobody(PLANT, fd)
    os.close(fd)
    assert done.returncode == 0, done.stderr
    os.symlink("/etc/shadow", path / "secret")
    assert not spares.give_back(path)
    assert sorted(os.listdir(path)) == ["run.sh", "secret"]  # left for the caller to remove
    nxt = workdir.run_dir(work, "next", 1)
    assert not spares.take(nxt, NOBODY, NOBODY)  # nothing was kept: made new, empty
    workdir.make_run_dir(nxt, NOBODY, NOBODY)
    assert os.listdir(nxt) == []


def test_a_folder_opened_to_everyone_is_private_again(tmp_path: Path) -> None:
    work = _work(tmp_path)
    spares = SpareDirs(work)
    path = _given(work, "opened")
    fd = _opened(path)
    done = _as_nobody("os.chmod(FD, 0o2777)", fd)
    os.close(fd)
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o2777
    assert spares.give_back(path) and not path.exists()
    kept = work / spare_dirs.SPARE
    assert stat.S_IMODE(os.stat(kept).st_mode) == 0o700
    (spare,) = kept.iterdir()
    st = os.stat(spare)
    assert (stat.S_IMODE(st.st_mode), st.st_uid) == (0o700, os.geteuid())  # the node's, 0700
    nxt = workdir.run_dir(work, "next", 1)
    assert spares.take(nxt, 1000, 1000)
    st = os.stat(nxt)
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o700, 1000, 1000)


def test_a_folder_already_the_nodes_is_kept_without_a_chown_and_private_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run as the node's own user leaves a folder that is the node's already: one ``stat``
    says so and nothing is written (D496); a mode it changed is still put back to 0700."""
    work = _work(tmp_path)
    spares = SpareDirs(work)
    plain = _given(work, "plain", None)
    opened = _given(work, "opened", None)
    os.chmod(opened, 0o2777)
    calls: list[tuple[str, str]] = []
    for name in ("chown", "chmod"):
        real = getattr(os, name)

        def recorded(path: Path, *args: object, _name: str = name, _real: object = real) -> None:
            calls.append((_name, os.path.basename(path)))
            _real(path, *args)  # type: ignore[operator]

        monkeypatch.setattr(os, name, recorded)
    assert spares.give_back(plain) and spares.give_back(opened)
    assert calls == [("chmod", opened.name)], calls  # ``opened``'s mode, nothing else
    for spare in (work / spare_dirs.SPARE).iterdir():
        st = os.stat(spare)
        assert (stat.S_IMODE(st.st_mode), st.st_uid) == (0o700, os.geteuid())


def test_a_folder_with_an_attribute_or_an_acl_is_not_kept(tmp_path: Path) -> None:
    work = _work(tmp_path)
    spares = SpareDirs(work)
    path = _given(work, "xattr")
    try:
        os.setxattr(path, "user.note", b"for the next run")
    except OSError as exc:
        pytest.skip(f"no user extended attributes on this file system: {exc}")
    assert not spares.give_back(path)
    acl = _given(work, "acl")
    # a default ACL giving user 1000 rights on every file the next run would create (the
    # kernel's format: version 2, then (tag, perm, id) per entry: owner, user 1000, group,
    # mask, other)
    entries = [(0x01, 7, -1), (0x02, 7, 1000), (0x04, 5, -1), (0x10, 7, -1), (0x20, 0, -1)]
    value = struct.pack("<I", 2) + b"".join(struct.pack("<HHi", *e) for e in entries)
    try:
        os.setxattr(acl, "system.posix_acl_default", value)
    except OSError as exc:
        pytest.skip(f"no ACLs on this file system: {exc}")
    assert not spares.give_back(acl)
    assert not (work / spare_dirs.SPARE).exists() or not os.listdir(work / spare_dirs.SPARE)


def test_a_process_still_holding_the_folder_cannot_add_to_it(tmp_path: Path) -> None:
    work = _work(tmp_path)
    spares = SpareDirs(work)
    path = _given(work, "held")
    fd = _opened(path)
    try:
        before = _as_nobody(PLANT, fd)
        assert before.returncode == 0, before.stderr  # while the run owned it: allowed
        os.unlink(path / "run.sh")
        assert spares.give_back(path)
        after = _as_nobody(PLANT, fd)  # the same descriptor, once given back
        assert after.returncode != 0 and "Permission denied" in after.stderr, after
        (spare,) = (work / spare_dirs.SPARE).iterdir()
        assert os.listdir(spare) == []
    finally:
        os.close(fd)


def test_the_next_run_of_another_user_gets_it_as_a_new_folder(tmp_path: Path) -> None:
    work = _work(tmp_path)
    spares = SpareDirs(work)
    path = _given(work, "first")
    os.utime(path, (1_000_000, 1_000_000))
    assert spares.give_back(path)
    nxt = workdir.run_dir(work, "second", 1)
    assert spares.take(nxt, 1000, 1000)
    st = os.stat(nxt)
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1000, 1000, 0o700)
    assert st.st_mtime > time.time() - 60  # the previous run's times do not carry over


@pytest.fixture
def layout(tmp_path: Path) -> Iterator[Layout]:
    yield from cgroup_layout("test-rundir", tmp_path, **SHAPES["auto"])


def test_runs_end_to_end_reuse_an_emptied_folder_and_never_a_used_one(
    layout: Layout, tmp_path: Path
) -> None:
    work = _work(tmp_path)
    pool = CgroupPool(layout, size=2)

    async def run(name: str, command: str) -> tuple[int, int, bool]:
        folder = workdir.run_dir(work, name, 1)
        code, proc = await run_in(pool, folder, command)
        inode = os.stat(folder).st_ino  # the process has ended: the folder is still there
        _usage, gone, _read, folder_gone = await launch.finish(pool, proc, folder, 65536)
        assert gone
        if not folder_gone:
            workdir.remove_run_dir(folder)
        return code, inode, folder_gone

    kept = spare_dirs.spares(work)
    empty = 'test -z "$(ls -A)"'  # the run's own check: its folder holds nothing

    async def scenario() -> None:
        code, first, folder_kept = await run("a", empty)
        assert (code, folder_kept, len(kept._free)) == (0, True, 1)  # left empty: kept
        code, second, folder_kept = await run("b", f"{empty} && echo left > note")
        assert code == 0 and second == first  # the kept folder, renamed: empty for this run
        assert not folder_kept and len(kept._free) == 0  # it now holds a file: not kept
        code, _, folder_kept = await run("c", empty)  # a new folder, empty too
        assert code == 0 and folder_kept

    asyncio.run(scenario())
