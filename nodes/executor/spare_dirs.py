"""A contained run's emptied folder is kept for the next run instead of removed and made again
(docs/architecture.md D423).

On ext4 a folder's ``mkdir`` allocates an inode and a block and its ``rmdir`` frees them:
~25-35 µs of a thread's CPU alone, and 5-8 times that beside a thread holding the GIL, as the
node's loop does (``bench.rundircost``); a ``rename`` moves a name. So a contained run's folder,
once nothing of the run is left (its cgroup is empty: :func:`nodes.executor.launch.finish`), is
given back here when the job left it exactly as it got it, and the next run's folder is one of
these renamed:

- given back (:meth:`SpareDirs.give_back`): first the node's again — owner (when the run had
  another user) and mode 0700, so no process of another user can add anything to it from here on
  (a process that still holds it open is refused by those too); one ``stat`` says whether it is
  so already (a run as the node's user that left its mode alone: the usual case), and only what
  differs is written (D496: each call in a ``cgroup-io`` thread lets the GIL go and takes it back
  from the busy loop); then kept only when it has no
  extended attribute (``listxattr``: a default ACL would reach the next run's files, an attribute
  would carry data) and no entry (``scandir``); then moved into ``<work>/.spare`` (0700, the
  node's), out of every job's reach. Anything else answers False: the caller reads the result
  file and removes the tree, as for any folder with leftovers.
- taken (:meth:`SpareDirs.take`): renamed to the run's name and given to the run's user, as a
  new folder would be (``workdir.make_run_dir``); a name that exists already, or no spare,
  answers False and the caller makes the folder as before.

At most ``kept`` are kept (beyond, a folder given back is removed): a node's ``capacity`` +
``max_armed``, the folders it can have in use at once (D464); ``SPARE_KEPT`` where none is said.
The spare folder is removed when the node starts (``workdir.clean_leftovers``): what a dead
process kept is not used.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import stat
from collections import deque
from pathlib import Path

SPARE = ".spare"  # under the work folder; not a run folder's name (workdir._RUN_DIR)
SPARE_KEPT = 64


class SpareDirs:
    """The emptied run folders of one work folder (shared by the cgroup-io threads: a deque's
    append and pop, and a counter's next, are atomic)."""

    def __init__(self, work: Path, kept: int = SPARE_KEPT) -> None:
        self.root = work / SPARE
        self.kept = kept  # at most this many (a node: its capacity + max_armed, D464)
        self._free: deque[str] = deque()
        self._names = itertools.count()
        self._made = False
        self._owner = (os.geteuid(), os.getegid())  # the node's (it does not change users)

    def take(self, path: Path, uid: int | None, gid: int | None) -> bool:
        """``path`` is now a kept folder, owned by ``uid``/``gid`` (None: the node's); False:
        none is kept, or the name exists (the caller makes the folder)."""
        try:
            spare = self._free.pop()
        except IndexError:
            return False
        try:
            os.rename(spare, path)  # replaces an empty leftover of the same name, as a remove would
        except OSError:
            _remove(spare)
            return False
        os.utime(path)  # its times are the run's, as a new folder's would be
        if uid is not None and gid is not None:
            os.chown(path, uid, gid)
        return True

    def give_back(self, path: Path) -> bool:
        """Keep ``path`` (its run has nothing left running) if the job left it as it got it;
        False: it holds something, or could not be kept (the caller handles it as before)."""
        if len(self._free) >= self.kept:
            return False
        try:
            st = os.stat(path)
            owned = (st.st_uid, st.st_gid) == self._owner
            if not owned:
                os.chown(path, *self._owner)  # the node's: no other user adds to it
            if not owned or stat.S_IMODE(st.st_mode) != 0o700:
                os.chmod(path, 0o700)
            if os.listxattr(path, follow_symlinks=False):
                return False
            with os.scandir(path) as entries:
                if next(entries, None) is not None:
                    return False
            if not self._made:
                os.makedirs(self.root, mode=0o700, exist_ok=True)
                self._made = True
            spare = str(self.root / str(next(self._names)))
            os.rename(path, spare)
        except OSError:
            return False
        self._free.append(spare)
        return True


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        try:
            os.rmdir(path)
        except OSError:
            shutil.rmtree(path, ignore_errors=True)


_BY_WORK: dict[Path, SpareDirs] = {}  # one per work folder (a node has one; tests a few)


def spares(work: Path) -> SpareDirs:
    found = _BY_WORK.get(work)
    if found is None:
        if len(_BY_WORK) >= 64:  # in-process test nodes come and go: bounded
            _BY_WORK.clear()
        found = _BY_WORK.setdefault(work, SpareDirs(work))
    return found


def forget(work: Path, kept: int = SPARE_KEPT) -> None:
    """The node starts: what an earlier process kept is removed, not used; from now on at most
    ``kept`` are kept."""
    _BY_WORK.pop(work, None)
    shutil.rmtree(work / SPARE, ignore_errors=True)
    if len(_BY_WORK) >= 64:  # in-process test nodes come and go: bounded
        _BY_WORK.clear()
    _BY_WORK[work] = SpareDirs(work, kept)
