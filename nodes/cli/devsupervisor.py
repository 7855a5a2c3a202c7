"""``cronmesh dev``'s supervision of its nodes (D244): the restart policy (pure), how an exit is
said, who leads (read from etcd), and the drain notices the nodes log while they stop."""

from __future__ import annotations

import json
import signal
import socket
from dataclasses import dataclass
from pathlib import Path

from nodes.cli.etcd_auth import etcdctl

RESTART_DELAY = 3.0  # s before the first restart of a node that exited
RESTART_CAP = 60.0  # s, the longest wait between restarts
STABLE_AFTER = 30.0  # s a node must have run for its exit not to count as a crash at start
MAX_QUICK_EXITS = 5  # crashes at start in a row before the node is given up
TAIL_MAX = 64 * 1024  # bytes of a node log read per poll while the nodes stop


@dataclass
class Restarts:
    """When to restart one node after it exited: ``base`` s, doubled for each exit in a row that
    came less than ``stable_after`` s after its start (up to ``cap``); more than ``max_quick`` such
    exits in a row and the node is given up (a node that crashes at start never loops forever)."""

    base: float = RESTART_DELAY
    cap: float = RESTART_CAP
    stable_after: float = STABLE_AFTER
    max_quick: int = MAX_QUICK_EXITS
    quick: int = 0  # exits in a row, each soon after its start

    def on_exit(self, ran_for: float) -> float | None:
        """The delay before the restart of a node that ran ``ran_for`` s; None: give it up."""
        self.quick = 1 if ran_for >= self.stable_after else self.quick + 1
        if self.quick > self.max_quick:
            return None
        return float(min(self.base * 2 ** (self.quick - 1), self.cap))


def busy_ports(ports: list[int], host: str = "127.0.0.1") -> list[int]:
    """The ports of ``ports`` something already listens on (or that cannot be bound)."""
    busy = []
    for port in ports:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, port))
            except OSError:
                busy.append(port)
    return busy


def describe_exit(returncode: int) -> str:
    """``exit code 2`` or ``killed by SIGKILL`` (Popen's negative codes are signals)."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"killed by {name}"
    return f"exit code {returncode}"


Leaders = dict[int, tuple[str, str]]
"""Shard → (the node leading it, its candidacy key): the key tells a restarted node's new
candidacy from the one its killed process left until its lease expired."""

SCHEDULER = "scheduler"  # shard 0's election; shard N's is ``scheduler-N`` (D301)


def parse_leaders(output: str, prefix: str) -> Leaders:
    """``etcdctl get <prefix>/election/ --prefix --sort-by=CREATE --order=ASCEND`` (a key line,
    then its value line) → each shard's leader: the oldest candidacy of its election."""
    lines = output.splitlines()
    root = f"{prefix}/election/"
    out: Leaders = {}
    for key, value in zip(lines[0::2], lines[1::2], strict=False):
        if not key.startswith(root):
            continue
        election = key[len(root) :].split("/", 1)[0]
        if election == SCHEDULER:
            shard = 0
        elif election.startswith(SCHEDULER + "-") and election[len(SCHEDULER) + 1 :].isdigit():
            shard = int(election[len(SCHEDULER) + 1 :])
        else:
            continue
        out.setdefault(shard, (value.strip(), key))
    return out


def read_leaders(endpoint: str, user: str, password: str, prefix: str = "/cronmesh") -> Leaders:
    """Who leads each shard now, read from etcd ({} when nobody leads or etcd does not answer)."""
    try:
        res = etcdctl(
            endpoint,
            "get",
            f"{prefix}/election/",
            "--prefix",
            "--sort-by=CREATE",
            "--order=ASCEND",
            user=user,
            password=password,
        )
    except (OSError, TimeoutError):
        return {}
    return parse_leaders(res.stdout, prefix) if res.returncode == 0 else {}


def read_leader(endpoint: str, user: str, password: str, prefix: str = "/cronmesh") -> str | None:
    """The node that leads the scheduler (shard 0) now; None when nobody leads."""
    lead = read_leaders(endpoint, user, password, prefix).get(0)
    return lead[0] if lead else None


def settled(before: Leaders, after: Leaders, gone: str | None) -> bool:
    """After node ``gone`` exited: shard 0 has a leader and no shard is still led by a
    candidacy of the exited process (a restarted ``gone`` may lead again, under a new key)."""
    stale = {key for node, key in before.values() if node == gone}
    return 0 in after and not any(key in stale for _, key in after.values())


def leader_news(before: Leaders, after: Leaders) -> str:
    """What changed, from a view read when the node exited (not one kept from the start,
    which a change of K or an earlier move made stale)."""
    if set(before) | set(after) <= {0}:
        was, now = before.get(0, ("nobody", ""))[0], after[0][0]
        return f"leader: still {now}" if was == now else f"leader: {now} (was {was})"
    moved = [
        f"{s} {before[s][0] if s in before else 'nobody'} → {after[s][0]}"
        for s in sorted(after)
        if before.get(s, ("", ""))[0] != after[s][0]
    ]
    leaders = ", ".join(f"{s} {after[s][0]}" for s in sorted(after))
    return (
        f"shard leaders: {leaders} ("
        + ("moved: " + ", ".join(moved) if moved else "none moved")
        + ")"
    )


class LogTail:
    """New lines of a node's JSON log from where it was when the tail started (bounded reads)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.offset = path.stat().st_size
        except OSError:
            self.offset = 0
        self._partial = b""

    def lines(self) -> list[dict[str, object]]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                chunk = f.read(TAIL_MAX)
        except OSError:
            return []
        self.offset += len(chunk)
        data = self._partial + chunk
        *complete, self._partial = data.split(b"\n")
        self._partial = self._partial[-TAIL_MAX:]
        out: list[dict[str, object]] = []
        for line in complete:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict):
                out.append(entry)
        return out


def _names(jobs: object) -> str:
    return ", ".join(str(j) for j in jobs) if isinstance(jobs, list) else str(jobs)


def drain_notice(entry: dict[str, object], *, hint: bool = True) -> str | None:
    """What a stopping node's log line says to the person at the terminal (None: nothing);
    ``hint``: with what a second Ctrl-C would do (said once per node)."""
    event = entry.get("event")
    if event == "draining":
        text = (
            f"waiting for {entry.get('running')} run(s) to finish ({_names(entry.get('jobs'))}): "
            f"{entry.get('left')} s left"
        )
        return text + ("; Ctrl-C again stops them at once (recorded cancelled)" if hint else "")
    if event == "interrupted: stopping the runs at once":
        return f"stopping {entry.get('running')} run(s) at once ({_names(entry.get('jobs'))})"
    if event == "drained":
        return "no run left"
    return None
