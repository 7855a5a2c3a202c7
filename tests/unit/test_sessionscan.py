"""nodes.executor.sessionscan: one pass over /proc answers for many sessions; concurrent lookups share
scans; a lookup is never answered by a scan that started before it."""

from __future__ import annotations

import asyncio
import os
import subprocess
import threading

import pytest

from nodes.executor.sessionscan import SessionScanner, scan_sessions, session_members


def _sleepers(n: int) -> list[subprocess.Popen[bytes]]:
    return [subprocess.Popen(["sleep", "60"], start_new_session=True) for _ in range(n)]


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        p.kill()
    for p in procs:
        p.wait(timeout=10)


def test_one_pass_finds_the_members_of_several_sessions() -> None:
    procs = _sleepers(3)
    try:
        sids = [p.pid for p in procs]
        found = scan_sessions([*sids, os.getsid(0)])
        for pid in sids:
            assert found[pid] == [pid]
            assert session_members(pid) == [pid]
        assert os.getpid() in found[os.getsid(0)]
        assert 2**22 + 1 not in scan_sessions([2**22 + 1])  # no such session
    finally:
        _stop(procs)
    for p in procs:  # reaped: gone from /proc
        assert session_members(p.pid) == []


def test_concurrent_lookups_share_scans_and_get_their_own_answers() -> None:
    procs = _sleepers(20)
    try:

        async def scenario() -> tuple[list[list[int]], int]:
            scanner = SessionScanner()
            answers = await asyncio.gather(*(scanner.members(p.pid) for p in procs))
            return answers, scanner.scans

        answers, scans = asyncio.run(scenario())
        assert answers == [[p.pid] for p in procs]
        assert scans <= 2  # the first lookup starts a scan, the other 19 share the next one
    finally:
        _stop(procs)


def test_a_lookup_is_answered_by_a_scan_started_after_it() -> None:
    calls: list[tuple[int, ...]] = []
    release = threading.Event()
    entered = threading.Event()

    def scan(sids: tuple[int, ...]) -> dict[int, list[int]]:
        calls.append(sids)
        if len(calls) == 1:
            entered.set()
            assert release.wait(10)
        return {sid: [sid, len(calls)] for sid in sids}

    async def scenario() -> None:
        scanner = SessionScanner(scan)
        first = asyncio.ensure_future(scanner.members(1))
        await asyncio.to_thread(entered.wait, 10)  # scan #1 is running
        late = [asyncio.ensure_future(scanner.members(s)) for s in (1, 2, 3)]
        await asyncio.sleep(0)
        release.set()
        assert await first == [1, 1]
        # 1 was asked again while scan #1 ran: it must come from scan #2, like 2 and 3
        assert [await f for f in late] == [[1, 2], [2, 2], [3, 2]]
        assert calls == [(1,), (1, 2, 3)]
        assert scanner.scans == 2

    asyncio.run(scenario())


def test_a_cancelled_caller_does_not_cancel_the_shared_answer() -> None:
    gate = threading.Event()

    def scan(sids: tuple[int, ...]) -> dict[int, list[int]]:
        assert gate.wait(10)
        return {sid: [sid] for sid in sids}

    async def scenario() -> None:
        scanner = SessionScanner(scan)
        a = asyncio.ensure_future(scanner.members(7))
        b = asyncio.ensure_future(scanner.members(7))
        await asyncio.sleep(0.01)
        a.cancel()
        gate.set()
        with pytest.raises(asyncio.CancelledError):
            await a
        assert await b == [7]

    asyncio.run(scenario())
