"""Network partition (criterion 7): one node runs in its own network namespace, joined to the host
by a veth pair; the etcd members serve clients on the host end too. The node starts first, so it
leads the scheduler; then its traffic to etcd is dropped (iptables DROP inside its namespace: no
refusal, no reset, just silence) for several lease TTLs, and let through again.

While cut off, the node must give up when its lease can no longer be renewed — stop leading, stop
claiming, kill its job processes — another node must take the lead, and the runs it lost must be
retried elsewhere; afterwards it must rejoin by itself and run jobs again. Across it all, every
tick has exactly one committed successful execution.

Needs root, ``ip`` (iproute2) and ``iptables`` (``.ci/bootstrap`` installs it); elsewhere the test
is skipped, saying why. Long mode: ``python -m tests.chaos.partition --cut 60 --rounds 3``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tests.chaos.harness import leader_of, lease_losses, node_ready, read_history, wait_ready
from tests.chaos.overlap import beating_command, check_file
from tests.chaos.scenario import EVERY_SECOND, Stage, recorded_job, run_command, stage
from tests.conftest import NodeProcess, api_session

JOB = "tick"
CUT = "node-1"
WORK = 4.0  # seconds each run of the job takes


def _ip(*args: str, ns: str | None = None) -> None:
    argv = ["ip", "netns", "exec", ns, *args] if ns else list(args)
    subprocess.run(argv, check=True, capture_output=True, text=True, timeout=10)


@dataclass
class Netns:
    """A network namespace joined to the host by a veth pair (a /30 of 10.231.0.0/16)."""

    name: str
    host_if: str
    host_ip: str
    ns_ip: str

    @classmethod
    def create(cls) -> Netns:
        tag = uuid.uuid4().hex[:6]
        octet = int(tag[:2], 16) % 250 + 1
        quad = int(tag[2:4], 16) % 60 * 4
        net = cls(
            f"cm{tag}", f"cm{tag}h", f"10.231.{octet}.{quad + 1}", f"10.231.{octet}.{quad + 2}"
        )
        inner = f"cm{tag}n"
        _ip("ip", "netns", "add", net.name)
        try:
            _ip("ip", "link", "add", net.host_if, "type", "veth", "peer", "name", inner)
            _ip("ip", "link", "set", inner, "netns", net.name)
            _ip("ip", "addr", "add", f"{net.host_ip}/30", "dev", net.host_if)
            _ip("ip", "link", "set", net.host_if, "up")
            _ip("ip", "addr", "add", f"{net.ns_ip}/30", "dev", inner, ns=net.name)
            _ip("ip", "link", "set", inner, "up", ns=net.name)
            _ip("ip", "link", "set", "lo", "up", ns=net.name)
        except BaseException:
            net.delete()
            raise
        return net

    @property
    def wrapper(self) -> list[str]:
        return ["ip", "netns", "exec", self.name]

    def drop(self, ports: list[int]) -> None:
        """Silently drop the namespace's TCP traffic to ``ports`` on the host end."""
        for port in ports:
            _ip("iptables", "-A", "OUTPUT", "-p", "tcp", "-d", self.host_ip,
                "--dport", str(port), "-j", "DROP", ns=self.name)  # fmt: skip

    def heal(self) -> None:
        _ip("iptables", "-F", "OUTPUT", ns=self.name)

    def delete(self) -> None:
        """Remove the veth pair and the namespace (also after a failure; never raises)."""
        for argv in (["ip", "link", "del", self.host_if], ["ip", "netns", "del", self.name]):
            subprocess.run(argv, capture_output=True, timeout=10, check=False)


def unavailable() -> str | None:
    """Why this machine cannot run the scenario, or None."""
    if os.geteuid() != 0:
        return "network namespaces and iptables need root"
    for tool in ("ip", "iptables"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed (.ci/bootstrap installs iptables with apt)"
    try:
        Netns.create().delete()
    except (OSError, subprocess.SubprocessError) as exc:
        return f"cannot create a network namespace here: {exc}"
    return None


async def _until(cond: Any, timeout: float, what: str, every: float = 0.1) -> float:
    """Wait for ``cond``; answers how long it took."""
    t0 = time.monotonic()
    while not await cond():
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(every)
    return time.monotonic() - t0


async def scenario(
    st: Stage, net: Netns, *, cut: float, rounds: int, lease_ttl: int, settle: float = 8
) -> dict[str, Any]:
    assert st.etcd_cluster is not None
    ports = [m.client_port for m in st.etcd_cluster.members]
    part = st.cluster.start(
        CUT,
        lease_ttl=lease_ttl,
        host=net.ns_ip,
        endpoints=st.etcd_cluster.endpoints_on(net.host_ip),
        wrapper=net.wrapper,
    )
    rounds_out: list[dict[str, Any]] = []
    async with api_session() as http:
        await wait_ready(http, part)  # first up: it leads
        for i in (2, 3):
            st.cluster.start(f"node-{i}", lease_ttl=lease_ttl)
        others: list[NodeProcess] = [p for p in st.cluster.procs if p is not part]
        spec = recorded_job(JOB, st.history, work=WORK)
        spec["command"] = beating_command(st.history, WORK)  # attempts must not overlap (D152)
        await st.put_job(http, spec)
        start = datetime.now(UTC) + timedelta(seconds=1)
        await asyncio.sleep(3)
        for r in range(rounds):
            # the first round cuts off the leader; later ones most likely a follower, which must
            # stop claiming all the same
            led = await leader_of(http, st.cluster.procs) == CUT

            async def cut_node_busy() -> bool:
                # it runs a job that still has a second or more to go: the cut must kill it
                history = read_history(st.history)
                ended = {(e.run, e.claim_revision) for e in history if e.phase == "end"}
                return any(
                    e.node == CUT
                    and e.phase == "start"
                    and (e.run, e.claim_revision) not in ended
                    and e.at > time.time() - (WORK - 1.0)
                    for e in history
                )

            await _until(cut_node_busy, 30, f"{CUT} to run a job before the cut", every=0.05)
            losses = lease_losses(st.cluster).get(CUT, 0)
            cut_at = time.time()
            net.drop(ports)

            async def lost(losses: int = losses) -> bool:
                return lease_losses(st.cluster).get(CUT, 0) > losses

            async def new_leader() -> bool:
                got = await leader_of(http, others)
                return got is not None and got != CUT

            gave_up = await _until(lost, lease_ttl + 5, f"{CUT} to give its lease up")
            took_over = await _until(new_leader, lease_ttl + 10, "another node to lead")
            await asyncio.sleep(max(0.0, cut - (time.time() - cut_at)))
            # nothing of the cut-off node may have started meanwhile (it claims nothing)
            started_while_cut = [
                e.run
                for e in read_history(st.history)
                if e.node == CUT and e.phase == "start" and cut_at + gave_up + 0.5 < e.at
            ]
            net.heal()
            healed_at = time.time()
            rejoined = await _until(lambda: node_ready(http, part.url), 60, f"{CUT} to rejoin")

            async def runs_again(healed_at: float = healed_at) -> bool:
                return any(
                    e.node == CUT and e.phase == "start" and e.at > healed_at
                    for e in read_history(st.history)
                )

            ran_again = await _until(runs_again, 60, f"{CUT} to run a job again", every=0.5)
            rounds_out.append(
                {
                    "round": r,
                    "was_leader": led,
                    "gave_lease_up_s": round(gave_up, 2),
                    "new_leader_s": round(took_over, 2),
                    "started_while_cut": started_while_cut,
                    "rejoined_s": round(rejoined, 2),
                    "ran_again_s": round(ran_again, 2),
                    "cut_at": cut_at,
                }
            )
        end = datetime.now(UTC) - timedelta(seconds=1)
        await asyncio.sleep(settle)
        report, hist = await st.close_window(http, JOB, EVERY_SECOND, start, end)
    # its job processes were killed when it gave up: started before, never ended
    history = read_history(st.history)
    ended = {(e.run, e.claim_revision) for e in history if e.phase == "end"}
    killed = sorted(
        f"{e.run}@{e.claim_revision}"
        for e in history
        if e.node == CUT and e.phase == "start" and (e.run, e.claim_revision) not in ended
    )
    overlap = check_file(st.history)
    ok = (
        report.ok
        and not report.unfinished
        and hist.ok
        and overlap.ok
        and all(not r["started_while_cut"] for r in rounds_out)
    )
    return {
        "report": report,
        "history": hist,
        "rounds": rounds_out,
        "killed_on_cut_node": killed,
        "overlap": overlap.as_dict(),
        "faults": rounds,
        "ok": ok,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--cut", type=float, default=60, help="seconds the node is cut off")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--lease-ttl", type=int, default=5)

    async def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
        why = unavailable()
        if why is not None:
            raise SystemExit(f"partition: cannot run here: {why}")
        net = Netns.create()
        try:
            async with stage(tmp, nodes=0, lease_ttl=args.lease_ttl, also_on=net.host_ip) as st:
                return await scenario(
                    st, net, cut=args.cut, rounds=args.rounds, lease_ttl=args.lease_ttl
                )
        finally:
            net.delete()

    run_command("partition", p, run)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    main()
