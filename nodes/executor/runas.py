"""Running a job as another user: user lookups, the node's policy, the ``setpriv`` prefix, and
the API's check of a job's ``run_as`` (the decisions themselves are in ``cluster.runas``, D142).

Switching users keeps the spawn on ``vfork``: CPython's ``subprocess`` gives up ``vfork`` as soon
as ``user=``/``group=``/``extra_groups=`` is passed (it must call ``setuid`` in the child), and
the run path is hot (D121). Instead the job's argv is prefixed with util-linux ``setpriv``, which
the node spawns (``vfork`` + ``exec``, as root), and which sets the groups, gid and uid and
``exec``s the job's command. An armed process (D121) is armed *inside* ``setpriv``: the user is
switched when the process is spawned ahead, and the release at the tick stays one write.
"""

from __future__ import annotations

import fcntl
import grp
import json
import os
import pwd
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from cluster.errors import Forbidden, InvalidInput
from cluster.etcd import Etcd
from cluster.keys import Keys
from cluster.models import RunAs
from cluster.runas import NodeRunAs, RunAsDecision, check_node_policy, project_refusal, servable
from cluster.runuids import check_range, choose_uid

if TYPE_CHECKING:
    from nodes.config import NodeConfig

log = structlog.get_logger(__name__)

SETPRIV_PATHS = ("/usr/bin/setpriv", "/bin/setpriv")


@dataclass(frozen=True, slots=True)
class Identity:
    """A resolved user to run a process as."""

    user: str
    uid: int
    gid: int
    home: str
    groups: tuple[int, ...] = ()  # supplementary groups, as a login of the user would have
    dynamic: bool = False  # a per-run uid (D205), given back to the node's RunUids after

    def env(self) -> dict[str, str]:
        return {"HOME": self.home, "USER": self.user, "LOGNAME": self.user}


def dynamic_identity(uid: int, home: str) -> Identity:
    """A per-run uid (D205): gid = uid, no supplementary groups, HOME = the run's folder."""
    return Identity(f"cronmesh-{uid}", uid, uid, home, (), dynamic=True)


def uids_in_use(lo: int, hi: int, proc: Path = Path("/proc")) -> set[int]:
    """The uids of ``lo..hi`` that a live process holds (the owner of ``/proc/<pid>``: its
    effective uid) or a passwd/group entry names. One pass over ``/proc``."""
    out: set[int] = set()
    try:
        entries: Iterable[os.DirEntry[str]] = list(os.scandir(proc))
    except OSError as exc:
        log.warning("cannot list processes to find live run uids", error=str(exc))
        entries = ()
    for entry in entries:
        if entry.name.isdigit():
            try:
                uid = entry.stat(follow_symlinks=False).st_uid
            except OSError:  # gone meanwhile
                continue
            if lo <= uid <= hi:
                out.add(uid)
    out.update(e.pw_uid for e in pwd.getpwall() if lo <= e.pw_uid <= hi)
    out.update(e.gr_gid for e in grp.getgrall() if lo <= e.gr_gid <= hi)
    return out


LOCK_DIR = Path("/run/cronmesh/run-uids")  # one lock file per uid, shared by a machine's nodes


class RunUids:
    """This node's per-run uids (D205): never two live runs with one uid, and a uid handed out
    again only once no process holds it. The choice rotates through the range (cluster.runuids);
    the uids processes hold are read from ``/proc`` at start and each time the rotation wraps,
    so a process left by an earlier node or escaped from an ended run keeps its uid out. Nodes
    sharing a machine (``cronmesh dev``, tests) share the range: a run's uid is also held with
    ``flock`` on ``<lock_dir>/<uid>`` for its whole life, released by the kernel if the node
    dies (its processes die with it: the fence, D152; the next scan sees any left)."""

    def __init__(
        self,
        lo: int,
        hi: int,
        in_use: Callable[[int, int], set[int]] = uids_in_use,
        lock_dir: Path | None = LOCK_DIR,
    ) -> None:
        problem = check_range(lo, hi)
        if problem is not None:
            raise InvalidInput(problem, field="run_uid_range")
        self.lo, self.hi = lo, hi
        self._in_use = in_use
        self.live: dict[int, int] = {}  # uid of a run that is not over -> its lock's fd (-1: none)
        self._held = in_use(lo, hi)  # held by a process or an entry at the last scan
        self._last: int | None = None
        self._stuck: dict[int, int] = {}  # uid of an ended run that may live on -> its lock's fd
        self._lock_dir = lock_dir
        if lock_dir is not None:
            try:
                lock_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            except OSError as exc:
                log.warning(
                    "no lock folder for per-run uids: nodes sharing this machine need disjoint "
                    "run_uid_range values",
                    folder=str(lock_dir),
                    error=str(exc),
                )
                self._lock_dir = None

    def acquire(self) -> int:
        """A free uid for a run (give it back with ``release``). Raises LookupError when every
        uid of the range is taken (the run fails with that message)."""
        scanned = False
        while True:  # each turn scans once, or takes a uid, or marks one held: bounded
            uid = choose_uid(self.lo, self.hi, self._last, self.live.keys() | self._held)
            wrapped = uid is None or (self._last is not None and uid <= self._last)
            if wrapped and not scanned:
                # what was held may be free now, what ended may be held
                self._held = self._in_use(self.lo, self.hi)
                for stuck in [u for u in self._stuck if u not in self._held]:
                    stuck_fd = self._stuck.pop(stuck)
                    if stuck_fd >= 0:
                        os.close(stuck_fd)
                self._held.update(self._stuck)
                scanned = True
                continue
            if uid is None:
                raise LookupError(
                    f"every uid of run_uid_range {self.lo}-{self.hi} is in use on this node"
                )
            fd = self._lock(uid)
            if fd is None:  # another node of this machine runs a run as uid
                self._held.add(uid)
                continue
            self.live[uid] = fd
            self._last = uid
            return uid

    def release(self, uid: int, *, over: bool = True) -> None:
        """The run of ``uid`` ended. ``over`` False: its process may still live (a cancelled
        wait), so the uid stays out (and locked) until a scan finds it free."""
        fd = self.live.pop(uid, -1)
        if not over:
            self._held.add(uid)
            self._stuck[uid] = fd  # locked until a scan finds no process of uid
            return
        if fd >= 0:
            os.close(fd)  # releases the flock

    def _lock(self, uid: int) -> int | None:
        if self._lock_dir is None:
            return -1
        fd = os.open(self._lock_dir / str(uid), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return None
        return fd


def user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def own_user() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def node_policy(config: NodeConfig) -> NodeRunAs:
    """The policy of this node: its configuration and the user it runs as. Raises InvalidInput
    naming the setting when the configuration contradicts itself."""
    policy = NodeRunAs(
        node=config.node_id,
        is_root=os.geteuid() == 0,
        own_user=own_user(),
        users=frozenset(config.run_as_users),
        default=config.run_as_default,
        allow_root=config.allow_root_jobs,
    )
    problem = check_node_policy(policy)
    if problem is not None:
        raise InvalidInput(problem, field="allow_root_jobs")
    return policy


def advertised(policy: NodeRunAs) -> list[str]:
    """What the node record says this node may run jobs as (placement reads it)."""
    return servable(policy, user_exists)


def resolve(decision: RunAsDecision) -> Identity:
    """The uid/gid of a decision's user and group on this machine. Raises LookupError naming
    what is missing (the run then fails with that message)."""
    assert decision.user is not None
    try:
        entry = pwd.getpwnam(decision.user)
    except KeyError:
        raise LookupError(f"no user {decision.user!r} on this node") from None
    gid = entry.pw_gid
    if decision.group is not None:
        try:
            group = grp.getgrnam(decision.group)
        except KeyError:
            raise LookupError(f"no group {decision.group!r} on this node") from None
        if group.gr_gid != entry.pw_gid and decision.user not in group.gr_mem:
            raise LookupError(f"user {decision.user!r} is not a member of {decision.group!r}")
        gid = group.gr_gid
    # the groups a login of the user has (its primary one included), plus the chosen group
    groups = tuple(sorted({*os.getgrouplist(decision.user, entry.pw_gid), gid}))
    return Identity(decision.user, entry.pw_uid, gid, entry.pw_dir or "/", groups)


def setpriv() -> str:
    found = next((p for p in SETPRIV_PATHS if os.access(p, os.X_OK)), None) or shutil.which(
        "setpriv"
    )
    if found is None:
        raise FileNotFoundError("setpriv (util-linux) is needed to run jobs as another user")
    return found


def switch_prefix(identity: Identity, setpriv_path: str) -> list[str]:
    """argv prefix that runs the rest as ``identity``: the user's supplementary groups (looked
    up by the node, cached, so setpriv reads no group database), the gid, then the uid;
    capabilities go with the uid."""
    groups = ",".join(map(str, identity.groups))
    return [
        setpriv_path,
        f"--reuid={identity.uid}",
        f"--regid={identity.gid}",
        f"--groups={groups}" if groups else "--clear-groups",
        "--",
    ]


# -- the API's checks ---------------------------------------------------------------------------


async def project_run_as_users(etcd: Etcd, keys: Keys, project: str) -> list[str]:
    """The users a project may run jobs as (its record's ``run_as_users``; none by default)."""
    kv = await etcd.get(keys.project(project))
    if kv is None:
        return []
    try:
        users = json.loads(kv.value).get("run_as_users") or []
    except ValueError:
        return []
    return [str(u) for u in users]


async def check_run_as(
    etcd: Etcd,
    keys: Keys,
    project: str,
    run_as: RunAs | None,
    *,
    field: str = "run_as",
    known: Callable[[str], bool] = user_exists,
) -> None:
    """Refuse a job (or workflow task) whose ``run_as`` its project may not use (403) or that
    names a user no node knows (400); nothing is stored then."""
    if run_as is None:
        return
    allowed = await project_run_as_users(etcd, keys, project)
    refusal = project_refusal(project, run_as.user, allowed)
    if refusal is not None:
        raise Forbidden(f"{field}.user: {refusal}", field=f"{field}.user")
    if known(run_as.user):
        if run_as.group is not None:
            try:
                resolve(RunAsDecision(run_as.user, run_as.group, switch=True))
            except LookupError as exc:
                raise InvalidInput(f"{field}.group: {exc}", field=f"{field}.group") from None
    elif not await _advertised_anywhere(etcd, keys, run_as.user):
        raise InvalidInput(
            f"{field}.user: no user {run_as.user!r} on this node nor among the users any live "
            "node may run jobs as",
            field=f"{field}.user",
        )


async def _advertised_anywhere(etcd: Etcd, keys: Keys, user: str) -> bool:
    res = await etcd.range(keys.nodes())
    for kv in res.kvs:
        try:
            if user in (json.loads(kv.value).get("run_as") or ()):
                return True
        except ValueError:
            continue
    return False
