"""``cronmesh dev``: an embedded etcd and N nodes on this machine, until Ctrl-C."""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from nodes.cli.devsupervisor import (
    LogTail,
    Restarts,
    busy_ports,
    describe_exit,
    drain_notice,
    leader_news,
    read_leader,
    read_leaders,
    settled,
)
from nodes.cli.etcd_auth import EtcdAuthError, enable_auth, write_secret_file
from nodes.devtools.embedded import EtcdProcess, _die_with_parent

ETCD_USER = "cronmesh"
# s the nodes get to stop after Ctrl-C: their drain (30 s) and the stop of what is left
DRAIN_WAIT = 75.0


DEFAULT_API_PORT = 8080  # the CLI's default --api is http://127.0.0.1:8080


def next_steps(port: int, admin: str) -> str:
    """The banner's last lines. On a port other than the CLI's default (8080) every command needs
    that API, not only ``login``: the banner says ``export CRONMESH_API=…`` first."""
    api = f"http://127.0.0.1:{port}"
    export = "" if port == DEFAULT_API_PORT else f"\n  export CRONMESH_API={api}"
    return (
        "\n\nNext, in another terminal (in this folder):"
        + export
        + f"\n  .venv/bin/cronmesh login -u {admin}"
        + "\n  .venv/bin/cronmesh job apply -f docs/examples/hello.yaml"
        + "\n  .venv/bin/cronmesh run list"
        + f"\n  web UI: {api}/"
        + "\nPress Ctrl-C to stop."
    )


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def _admin_password(data: Path) -> tuple[str, str]:
    """The dev cluster's admin password: CRONMESH_ADMIN_PASSWORD, else one generated once and kept
    (0600) in the data folder, so a restarted dev cluster keeps the same admin."""
    path = data / "admin-password"
    given = os.environ.get("CRONMESH_ADMIN_PASSWORD")
    if given:
        password = given
    elif path.exists():
        password = path.read_text().strip()
    else:
        password = secrets.token_urlsafe(12)
    write_secret_file(path, password)
    return str(path), password


def _secrets_key(data: Path) -> str:
    """The dev cluster's key ring for project secrets: CRONMESH_SECRETS_KEY_FILE, else one key
    generated once and kept (0600) in the data folder, so restarts still open every secret."""
    given = os.environ.get("CRONMESH_SECRETS_KEY_FILE")
    if given:
        return given
    path = data / "secrets.key"
    if not path.exists():
        from cluster.secretbox import new_key

        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(new_key() + "\n")
    return str(path)


def _jobs_user() -> str:
    """Who the dev nodes run jobs as (D142), for the banner."""
    if os.geteuid() != 0:
        return "you (the nodes' user); a job's run_as needs nodes running as root"
    user = os.environ.get("CRONMESH_RUN_AS_DEFAULT") or "dynamic"
    if user == "dynamic":
        return "a uid of each run's own unless a job's run_as names a user of CRONMESH_RUN_AS_USERS"
    return f"{user!r} unless a job's run_as names a user of CRONMESH_RUN_AS_USERS"


def main(args: argparse.Namespace) -> int:
    ports = [args.port + i for i in range(args.nodes)]
    clash = sorted({args.etcd_port, args.etcd_port + 1} & set(ports))
    if clash:  # etcd's peer port is --etcd-port + 1: a node then fails to bind at start
        print(
            f"cronmesh dev: port(s) {', '.join(map(str, clash))} asked for twice: the nodes use "
            f"--port {args.port} to {ports[-1]}, etcd --etcd-port {args.etcd_port} and the next "
            "one; choose ports that do not overlap",
            file=sys.stderr,
        )
        return 2
    busy = busy_ports([args.etcd_port, args.etcd_port + 1, *ports])
    if busy:
        # else etcd fails to bind, the other one answers its health check, and the error is
        # about passwords (issue #22: a second `cronmesh dev`)
        print(
            f"cronmesh dev: port(s) {', '.join(map(str, busy))} on 127.0.0.1 already in use "
            "(another cronmesh dev or etcd?); stop it, or choose other ports with --port "
            "(nodes) and --etcd-port (etcd uses it and the next one)",
            file=sys.stderr,
        )
        return 1
    data = Path(args.data).resolve()
    data.mkdir(parents=True, exist_ok=True)
    data.chmod(0o700)  # etcd data, passwords, every project's logs: the owner only
    etcd = EtcdProcess(
        data / "etcd",
        client_port=args.etcd_port,
        peer_port=args.etcd_port + 1,
        log_file=data / "etcd.log",
    )
    print(f"starting etcd on {etcd.endpoint} (data in {data / 'etcd'}) ...", flush=True)
    try:
        etcd.start()
    except (RuntimeError, TimeoutError, OSError) as exc:
        etcd.stop()
        print(f"cronmesh dev: etcd did not start: {exc}", file=sys.stderr)
        print(log_tail(data / "etcd.log"), file=sys.stderr)
        return 1
    # etcd with authentication (D156): the nodes log in as a user whose role covers the cronmesh
    # prefix only, so a job (or anything on this machine) without the password cannot read or
    # write the control plane over the loopback port.
    try:
        etcd_password_file = enable_auth(etcd.endpoint, data, user=ETCD_USER)
    except EtcdAuthError as exc:
        etcd.stop()
        print(f"cannot set up etcd authentication: {exc}", file=sys.stderr)
        return 1
    password_file, password = _admin_password(data)
    secrets_key = _secrets_key(data)
    env = dict(
        os.environ,
        CRONMESH_LOG_FORMAT="json",
        CRONMESH_ADMIN_PASSWORD_FILE=password_file,
        CRONMESH_SECRETS_KEY_FILE=secrets_key,
        # links in notifications open the first node's UI (D256)
        CRONMESH_PUBLIC_URL=os.environ.get("CRONMESH_PUBLIC_URL") or f"http://127.0.0.1:{ports[0]}",
    )
    etcd_password = etcd_password_file.read_text().strip()
    cluster = DevCluster(data, etcd, ports, env, etcd_password_file, restart=args.restart)

    def stop(*_: object) -> None:
        cluster.interrupts += 1

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        cluster.start_all()
        deadline = time.monotonic() + 60
        while not all(_ready(p) for p in ports):
            if cluster.interrupts:
                return 0
            gone = [s for s in cluster.slots if s.proc is not None and s.proc.poll() is not None]
            for slot in gone:  # a node that cannot start: say why now, not after a minute
                assert slot.proc is not None
                how = describe_exit(slot.proc.returncode)
                print(f"{slot.name} exited during its start ({how}):", file=sys.stderr)
                print(log_tail(data / f"{slot.name}.log"), file=sys.stderr)
            if gone or time.monotonic() > deadline or not etcd_alive(etcd):
                print("nodes did not become ready; see the logs in", data, file=sys.stderr)
                return 1
            time.sleep(0.1)
        leader = None
        until = time.monotonic() + 15
        while leader is None and time.monotonic() < until and not cluster.interrupts:
            leader = read_leader(etcd.endpoint, ETCD_USER, etcd_password)
            if leader is None:
                time.sleep(0.3)
        cluster.leader = leader
        admin = os.environ.get("CRONMESH_ADMIN_USER", "admin")
        print(
            f"\ncronmesh is running: {args.nodes} node(s), API http://127.0.0.1:{ports[0]}"
            + (f" (also {', '.join(str(p) for p in ports[1:])})" if len(ports) > 1 else "")
            + "\n  nodes: "
            + ", ".join(
                f"{slot.name} (pid {slot.proc.pid if slot.proc else '-'}, port {slot.port})"
                for slot in cluster.slots
            )
            + f"\n  scheduler leader: {leader or 'not elected yet'}"
            + f"\n  etcd {etcd.endpoint} with authentication: nodes log in as {ETCD_USER!r}"
            + f" (password in {etcd_password_file}; root's in {data / 'etcd-root-password'})"
            + f"\n  logs in {data} (node-N.log, etcd.log)"
            + "\n  node-to-node calls are signed (security level 1); project secrets are"
            + f" encrypted with the key ring in {secrets_key}"
            + f"\n  jobs run as {_jobs_user()}"
            + "\n  a node that exits is "
            + ("restarted after a few seconds" if args.restart else "not restarted (--no-restart)")
            + f"\n\n  admin user: {admin}   password: {password}"
            + f"\n  (the password is kept in {password_file})"
            + next_steps(ports[0], admin),
            flush=True,
        )
        return cluster.supervise()
    finally:
        cluster.stop_all()
        etcd.stop()


def log_tail(path: Path, lines: int = 12) -> str:
    """The last lines of a log (at most 8 KiB read), indented."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 8192))
            text = f.read().decode(errors="replace")
    except OSError as exc:
        return f"  ({path}: {exc})"
    return "\n".join("  " + line[:300] for line in text.splitlines()[-lines:])


def etcd_alive(etcd: EtcdProcess) -> bool:
    return etcd.proc is not None and etcd.proc.poll() is None


@dataclass
class Slot:
    """One node of the dev cluster: its process, its restarts, and what the supervisor awaits."""

    index: int
    port: int
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    restarts: Restarts = field(default_factory=Restarts)
    restart_at: float | None = None  # monotonic time of the pending restart
    given_up: bool = False
    stopped: bool = False  # exited cleanly (asked to shut down): not restarted
    announce_ready: bool = False  # restarted: say when it answers again

    @property
    def name(self) -> str:
        return f"node-{self.index}"


class DevCluster:
    """The nodes of ``cronmesh dev`` and their supervision (D244): a node that exits is reported
    (which, how, who leads now) and restarted after a backoff, unless ``restart`` is off; the
    command fails only when etcd dies or every node is given up."""

    def __init__(
        self,
        data: Path,
        etcd: EtcdProcess,
        ports: list[int],
        env: dict[str, str],
        etcd_password_file: Path,
        *,
        restart: bool = True,
    ) -> None:
        self.data = data
        self.etcd = etcd
        self.env = env
        self.etcd_password_file = etcd_password_file
        self.restart = restart
        self.slots = [Slot(i, port) for i, port in enumerate(ports, 1)]
        self.interrupts = 0  # Ctrl-C (SIGINT) and SIGTERM received
        self.leader: str | None = None
        self._leader_check: tuple[float, str | None] | None = None  # (until, the node that left)
        self._before: dict[int, tuple[str, str]] = {}  # the leaders when that node left
        self._leader_next = 0.0

    def _argv(self, slot: Slot) -> list[str]:
        return [
            *(sys.executable, "-m", "nodes.cli", "node", "--etcd", self.etcd.endpoint),
            *("--listen", f"127.0.0.1:{slot.port}", "--node-id", slot.name),
            *("--data-dir", str(self.data), "--etcd-user", ETCD_USER),
            *("--etcd-password-file", str(self.etcd_password_file)),
            # one log store for all: a killed node's output is served by the others at once,
            # whole once it restarts (D255)
            *("--log-store", str(self.data / "logs")),
        ]

    def start(self, slot: Slot) -> None:
        with open(self.data / f"{slot.name}.log", "ab") as log:
            # A process group of its own: the terminal's Ctrl-C reaches only this supervisor,
            # which forwards it (first: drain; second: stop the runs at once). Dies with us.
            slot.proc = subprocess.Popen(
                self._argv(slot),
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                process_group=0,
                preexec_fn=_die_with_parent,
            )
        slot.started = time.monotonic()
        slot.restart_at = None

    def start_all(self) -> None:
        for slot in self.slots:
            self.start(slot)

    def _leaders(self) -> dict[int, tuple[str, str]]:
        try:
            password = self.etcd_password_file.read_text().strip()
        except OSError:
            return {}
        return read_leaders(self.etcd.endpoint, ETCD_USER, password)

    def supervise(self) -> int:
        """Until Ctrl-C: 0; etcd died or every node was given up: 1."""
        while not self.interrupts:
            now = time.monotonic()
            if not etcd_alive(self.etcd):
                code = self.etcd.proc.returncode if self.etcd.proc is not None else None
                say(f"etcd exited ({describe_exit(code or 0)}); see {self.data / 'etcd.log'}")
                return 1
            for slot in self.slots:
                self._check(slot, now)
            self._check_leader(now)
            if all(s.given_up or s.stopped for s in self.slots):
                if all(s.stopped for s in self.slots):
                    say("every node has stopped")
                    return 0
                say("every node is down and keeps crashing: stopping (see the logs above)")
                return 1
            time.sleep(0.2)
        return 0

    def _check(self, slot: Slot, now: float) -> None:
        proc = slot.proc
        if proc is not None and proc.poll() is not None:
            slot.proc = None
            ran = now - slot.started
            log = self.data / f"{slot.name}.log"
            how = describe_exit(proc.returncode)
            say(f"{slot.name} exited ({how}) after {ran:.0f} s; see {log}")
            self._leader_check = (now + 30, slot.name)
            self._before = self._leaders()  # its candidacies outlive it until its lease ends
            if proc.returncode == 0:
                slot.stopped = True  # it was asked to stop (cronmesh node shutdown)
                say(f"{slot.name} stopped on request: not restarted")
            elif not self.restart:
                slot.given_up = True
                say(f"{slot.name} is not restarted (--no-restart)")
            else:
                delay = slot.restarts.on_exit(ran)
                if delay is None:
                    slot.given_up = True
                    say(
                        f"{slot.name} crashed {slot.restarts.max_quick} times in a row soon after "
                        f"its start: not restarting it (see {log})"
                    )
                else:
                    slot.restart_at = now + delay
                    say(f"restarting {slot.name} in {delay:g} s")
        if slot.restart_at is not None and now >= slot.restart_at:
            self.start(slot)
            slot.announce_ready = True
            assert slot.proc is not None
            say(f"{slot.name} restarted (pid {slot.proc.pid})")
        if slot.announce_ready and slot.proc is not None and _ready(slot.port):
            slot.announce_ready = False
            say(f"{slot.name} is back: http://127.0.0.1:{slot.port}")

    def _check_leader(self, now: float) -> None:
        """After a node exit: who leads now, once someone alive does (or 30 s passed)."""
        if self._leader_check is None or now < self._leader_next:
            return
        self._leader_next = now + 0.5  # etcdctl twice a second at most, only while it matters
        until, gone = self._leader_check
        leaders = self._leaders()
        if settled(self._before, leaders, gone):
            say(leader_news(self._before, leaders))
            self.leader, self._leader_check = leaders[0][0], None
        elif now > until:
            say(f"no leader {30} s after {gone} left (see the node logs)")
            self.leader, self._leader_check = None, None

    def stop_all(self) -> None:
        """Ctrl-C: every node drains (they say what they wait for); Ctrl-C again: they stop
        their runs at once. Nodes still there after the drain and a margin are killed."""
        live = [s for s in self.slots if s.proc is not None and s.proc.poll() is None]
        if not live:
            return
        say("\nstopping: the nodes finish their runs (Ctrl-C again to stop them at once) ...")
        tails = {s.name: LogTail(self.data / f"{s.name}.log") for s in live}
        hinted: set[str] = set()
        for slot in live:
            assert slot.proc is not None
            slot.proc.send_signal(signal.SIGINT)
        forwarded = max(self.interrupts, 1)
        deadline = time.monotonic() + DRAIN_WAIT
        while any(s.proc is not None and s.proc.poll() is None for s in live):
            if self.interrupts > forwarded:
                forwarded = self.interrupts
                for slot in live:
                    if slot.proc is not None and slot.proc.poll() is None:
                        slot.proc.send_signal(signal.SIGINT)
            _tell(tails, hinted)
            if time.monotonic() > deadline:
                for slot in live:
                    if slot.proc is not None and slot.proc.poll() is None:
                        say(f"{slot.name} did not stop within {DRAIN_WAIT:g} s: killed")
                        slot.proc.kill()
                break
            time.sleep(0.2)
        for slot in live:
            if slot.proc is not None:
                slot.proc.wait()
        _tell(tails, hinted)  # what they logged last


def _tell(tails: dict[str, LogTail], hinted: set[str]) -> None:
    """Print what the stopping nodes logged about their drain since the last look."""
    for name, tail in tails.items():
        for entry in tail.lines():
            notice = drain_notice(entry, hint=name not in hinted)
            if notice:
                hinted.add(name)
                say(f"{name}: {notice}")


def say(text: str) -> None:
    print(text, flush=True)
