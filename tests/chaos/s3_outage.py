"""S3 outage (criterion 6): the nodes ship run logs to S3 (SeaweedFS) through a fault proxy that,
in turn, refuses connections (nothing listens), stays silent (accepts, reads, never answers), and
answers every request with 503 ``SlowDown``; then lets everything through again.

A job runs every second and prints numbered lines (``seq <run> <n>``). Job outcomes must not be
affected, the spool must stay within its disk cap, and afterwards every run's log must be in S3
with all of its lines, in order, once: 100 % of the bytes, no gap, no duplicate.

Long mode: ``python -m tests.chaos.s3_outage --each 120`` (two minutes per form).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp

from nodes.devtools.embedded import free_port
from tests.chaos.harness import (
    check_history,
    history_command,
    read_history,
    read_metric,
    wait_all_ready,
)
from tests.chaos.scenario import EVERY_SECOND, Stage, run_command, stage
from tests.conftest import api_session
from tests.integration.test_logs_s3 import new_bucket, stored_log, stream_of
from tests.seaweed import SeaweedS3

JOB = "lines"
LINES = 40
SPOOL_CAP = 2 * 1024 * 1024  # bytes: the smallest cap a node accepts is 1 MiB
FORMS = ("refused", "silent", "slowdown")
SLOWDOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)


class S3Fault:
    """A TCP proxy in front of S3 whose mode decides what a new connection gets: ``pass``,
    ``refused`` (the port is closed), ``silent`` (accepted, never answered) or ``slowdown``
    (an HTTP 503 SlowDown answer). Changing the mode cuts every open connection."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self.mode = "pass"
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.StreamWriter] = set()
        self.counts: dict[str, int] = {}

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> S3Fault:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        return self

    async def set_mode(self, mode: str) -> None:
        for w in list(self._conns):
            w.transport.abort()
        if mode == "refused" and self._server is not None:
            self._server.close()
            self._server = None
        elif mode != "refused" and self._server is None:
            await self.start()
        self.mode = mode

    async def close(self) -> None:
        await self.set_mode("refused")

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        mode = self.mode
        self.counts[mode] = self.counts.get(mode, 0) + 1
        self._conns.add(writer)
        try:
            if mode == "silent":
                await reader.read()  # until the client gives up or the mode changes
            elif mode == "slowdown":
                await reader.readuntil(b"\r\n\r\n")
                head = (
                    "HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\n"
                    f"Content-Length: {len(SLOWDOWN)}\r\nConnection: close\r\n\r\n"
                )
                writer.write(head.encode() + SLOWDOWN)
                await writer.drain()
            else:
                await self._pump(reader, writer)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            self._conns.discard(writer)
            writer.transport.abort()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_r, up_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        self._conns.add(up_w)

        async def copy(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        try:
            await asyncio.gather(copy(reader, up_w), copy(up_r, writer))
        finally:
            self._conns.discard(up_w)
            up_w.transport.abort()


def line_command() -> str:
    return f'for i in $(seq 1 {LINES}); do echo "seq $CRONMESH_RUN_ID $i"; done'


async def _backlog(http: aiohttp.ClientSession, url: str) -> float:
    """The node's spool backlog; a node that does not answer fails the scenario (MetricMissing),
    never reads as an empty spool."""
    return await read_metric(http, url, "cronmesh_log_spool_backlog_bytes")


def log_findings(s3: SeaweedS3, bucket: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Each finished run's object in S3: missing, gaps/duplicates/disorder, bytes found."""
    missing, broken = [], []
    for run in runs:
        for att in run.get("attempts", []):
            key = f"x/default/{JOB}/{run['id']}/{att['attempt']}.log"
            obj = stored_log(s3, bucket, att.get("log"), key)  # its own object or in a pack
            if obj is None:
                missing.append(key)
                continue
            lines = stream_of(obj.decode(), "stdout")
            want = [f"seq {run['id']} {i}" for i in range(1, LINES + 1)]
            if att["status"] == "succeeded" and lines != want:
                broken.append({"key": key, "lines": len(lines), "first": lines[:2]})
    return {"missing": missing, "broken": broken}


async def scenario(
    st: Stage, s3: SeaweedS3, fault: S3Fault, bucket: str, *, each: float, lease_ttl: int
) -> dict[str, Any]:
    cfg = st.history.parent / "node.yaml"
    cfg.write_text(f"spool_disk_cap: {SPOOL_CAP}\nlog_segment_interval: 0.5\n")
    for i in (1, 2, 3):
        st.cluster.start(
            f"node-{i}",
            "--log-store",
            f"s3://{bucket}/x",
            "--s3-endpoint",
            fault.endpoint,
            "--config",
            str(cfg),
            lease_ttl=lease_ttl,
        )
    await wait_all_ready(st.cluster)
    peak = 0.0
    phases: list[dict[str, Any]] = []
    async with api_session() as http:
        # the job records its execution too (history), around the numbered lines it logs
        command = history_command(st.history, body=line_command())
        spec = {"name": JOB, "command": command, "schedules": [{"cron": EVERY_SECOND}]}
        spec |= {"catchup": "all", "keep_runs": 100_000, "retries": 2, "retry_interval": 0}
        await st.put_job(http, spec)
        start = datetime.now(UTC) + timedelta(seconds=1)
        await asyncio.sleep(3)
        for form in FORMS:
            await fault.set_mode(form)
            t_end = time.monotonic() + each
            while time.monotonic() < t_end:
                peak = max([peak, *[await _backlog(http, u) for u in st.urls]])
                await asyncio.sleep(1)
            phases.append({"form": form, "seconds": each, "connections": fault.counts.get(form, 0)})
        await fault.set_mode("pass")
        end = datetime.now(UTC) - timedelta(seconds=1)
        await asyncio.sleep(3)
        report, _ = await st.close_window(http, JOB, EVERY_SECOND, start, end)
        # runs written ahead of the disable still run: let every run finish first
        settle_by = time.monotonic() + 30
        runs = [r for r in await _runs(st) if r["status"] != "skipped"]
        while any(r["status"] in ("pending", "running") for r in runs):
            if time.monotonic() > settle_by:
                break
            await asyncio.sleep(0.5)
            runs = [r for r in await _runs(st) if r["status"] != "skipped"]
        deadline = time.monotonic() + 120 + each  # a silent S3 costs the client its read timeout
        found = log_findings(s3, bucket, runs)
        while (found["missing"] or found["broken"]) and time.monotonic() < deadline:
            await asyncio.sleep(2)
            found = log_findings(s3, bucket, runs)
    hist = check_history(runs, [e for e in read_history(st.history) if e.job == JOB])
    return {
        "report": report,
        "history": hist,
        "phases": phases,
        "faults": len(FORMS),
        "runs": len(runs),
        "failed_runs": [
            {"id": r["id"], "status": r["status"], "error": r.get("error"), "node": r.get("node")}
            for r in runs
            if r["status"] != "succeeded"
        ],
        "spool_peak_bytes": peak,
        "spool_cap_bytes": SPOOL_CAP,
        "logs": found,
        "summary": {"lost": len(found["missing"]) + len(found["broken"])},
        "ok": report.ok
        and hist.ok
        and not report.unfinished
        and 0 < peak <= SPOOL_CAP
        and not found["missing"]
        and not found["broken"],
    }


async def _runs(st: Stage) -> list[dict[str, Any]]:
    from tests.chaos.checker import load_runs

    return await load_runs(st.etcd, st.keys, "default", JOB)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--each", type=float, default=120, help="seconds of each form of outage")
    p.add_argument("--lease-ttl", type=int, default=5)

    async def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
        s3 = await asyncio.to_thread(SeaweedS3(tmp / "s3").start)
        fault = await S3Fault(s3.ports["s3"]).start()
        os.environ.update({k: v for k, v in s3.env().items() if k != "AWS_ENDPOINT_URL"})
        try:
            bucket = new_bucket(s3)
            async with stage(tmp, nodes=0, lease_ttl=args.lease_ttl) as st:
                return await scenario(
                    st, s3, fault, bucket, each=args.each, lease_ttl=args.lease_ttl
                )
        finally:
            await fault.close()
            await asyncio.to_thread(s3.stop)

    run_command("s3_outage", p, run)


if __name__ == "__main__":
    main()
