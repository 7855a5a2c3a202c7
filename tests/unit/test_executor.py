"""nodes.executor.process with real processes: output, exit status, stop/kill of the whole tree,
leftover cleanup. Every scenario runs under the default asyncio loop and under uvloop."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest
import uvloop

from nodes.executor.arming import ARMED_EXIT
from nodes.executor.process import ExitStatus, Process, session_members
from nodes.executor.sessionscan import parse_stat as _parse_stat
from nodes.executor.sessionscan import scanner

T = TypeVar("T")
PY = sys.executable
ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PY": PY, "LC_ALL": "C"}

Runner = Callable[[Coroutine[Any, Any, T]], T]


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Runner[Any]:
    """Run a scenario coroutine on a fresh loop of the parametrized kind."""
    factory = uvloop.new_event_loop if request.param == "uvloop" else None

    def runner(coro: Coroutine[Any, Any, T]) -> T:
        with asyncio.Runner(loop_factory=factory) as r:
            is_uvloop = isinstance(r.get_loop(), uvloop.Loop)
            assert is_uvloop == (request.param == "uvloop")
            return r.run(coro)

    return runner


class Output:
    def __init__(self) -> None:
        self.data = {"stdout": bytearray(), "stderr": bytearray()}
        self.calls = 0

    def __call__(self, stream: str, chunk: bytes) -> None:
        assert isinstance(chunk, bytes)
        self.calls += 1
        self.data[stream] += chunk

    @property
    def stdout(self) -> bytes:
        return bytes(self.data["stdout"])

    @property
    def stderr(self) -> bytes:
        return bytes(self.data["stderr"])


async def start(argv: list[str], out: Output, cwd: Path | None = None, **env: str) -> Process:
    return await Process.start(
        argv, env={**ENV, **env}, cwd=str(cwd) if cwd else None, on_output=out
    )


async def wait_until(cond: Callable[[], Any], within: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + within
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.01)


def alive(pid: int) -> bool:
    """True while /proc/<pid> exists and is not a zombie."""
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return False
    parsed = _parse_stat(data)
    return parsed is not None and parsed[0] not in (b"Z", b"X")


def stat_fields(pid: int) -> list[bytes]:
    data = Path(f"/proc/{pid}/stat").read_bytes()
    return data[data.rfind(b")") + 1 :].split()


def comm(pid: int) -> str:
    return Path(f"/proc/{pid}/comm").read_text().rstrip("\n")


async def all_gone(pids: list[int], within: float = 5.0) -> None:
    await wait_until(lambda: not any(alive(p) for p in pids), within, f"{pids} to be gone")


def pid_file(path: Path) -> Callable[[], int | None]:
    """Condition: the pid written (with a trailing newline) to ``path``."""

    def read() -> int | None:
        try:
            text = path.read_text()
        except FileNotFoundError:
            return None
        return int(text) if text.endswith("\n") else None

    return read


def done(proc: Process, timeout: float = 10.0) -> Awaitable[ExitStatus]:
    return asyncio.wait_for(proc.wait(), timeout)


# --------------------------------------------------------------------------- output, status


def test_stdout_stderr_binary_and_exit_zero(run: Runner[None]) -> None:
    script = (
        "import sys\n"
        "sys.stdout.buffer.write(b'line one\\n\\x00\\xff\\xfe binary\\n'); sys.stdout.flush()\n"
        "sys.stderr.buffer.write(b'oops\\x01\\n'); sys.stderr.flush()\n"
        "sys.stdout.buffer.write(b'no newline at the end')\n"
    )

    async def scenario() -> None:
        out = Output()
        proc = await start([PY, "-c", script], out)
        assert proc.pid > 0
        st = await done(proc)
        assert st == ExitStatus(exit_code=0, signal=None)
        assert st.ok
        assert proc.returncode_ready
        assert out.stdout == b"line one\n\x00\xff\xfe binary\nno newline at the end"
        assert out.stderr == b"oops\x01\n"

    run(scenario())


def test_exit_code_nonzero(run: Runner[None]) -> None:
    async def scenario() -> None:
        proc = await start(["/bin/sh", "-c", "echo bye; exit 3"], out := Output())
        st = await done(proc)
        assert st == ExitStatus(exit_code=3, signal=None)
        assert not st.ok
        assert out.stdout == b"bye\n"

    run(scenario())


def test_killed_by_signal_reports_the_signal(run: Runner[None]) -> None:
    script = "import os, signal; os.kill(os.getpid(), signal.SIGUSR1)"

    async def scenario() -> None:
        proc = await start([PY, "-c", script], Output())
        st = await done(proc)
        assert st == ExitStatus(exit_code=None, signal=signal.SIGUSR1)
        assert not st.ok

    run(scenario())


def test_environment_and_cwd(run: Runner[None], tmp_path: Path) -> None:
    real_cwd = tmp_path.resolve()

    async def scenario() -> None:
        out = Output()
        proc = await start(
            ["/bin/sh", "-c", 'printf "%s|%s|%s" "$FOO" "$(pwd -P)" "${HOME-unset}"'],
            out,
            cwd=tmp_path,
            FOO="bar baz",
        )
        assert (await done(proc)).ok
        assert out.stdout.decode() == f"bar baz|{real_cwd}|unset"

    run(scenario())


def test_start_failure_raises_oserror(run: Runner[None], tmp_path: Path) -> None:
    async def scenario() -> None:
        with pytest.raises(FileNotFoundError):
            await start([str(tmp_path / "no-such-binary")], Output())

    run(scenario())


def test_large_output_is_captured_completely(run: Runner[None]) -> None:
    script = (
        "import sys\n"
        "chunk = bytes(range(256)) * 4096\n"  # 1 MiB
        "for _ in range(10):\n"
        "    sys.stdout.buffer.write(chunk)\n"
        "    sys.stderr.buffer.write(b'e' * 10000)\n"
    )

    async def scenario() -> None:
        out = Output()
        proc = await start([PY, "-c", script], out)
        assert (await done(proc, 60)).ok
        assert len(out.stdout) == 10 * 1024 * 1024
        assert out.stdout == (bytes(range(256)) * 4096) * 10
        assert out.stderr == b"e" * 100000

    run(scenario())


def test_wait_is_idempotent_and_shared(run: Runner[None]) -> None:
    async def scenario() -> None:
        proc = await start(["/bin/sh", "-c", "sleep 0.2; exit 7"], Output())
        first = await asyncio.wait_for(asyncio.gather(proc.wait(), proc.wait(), proc.wait()), 10)
        assert list(first) == [ExitStatus(7, None)] * 3
        assert await proc.wait() == ExitStatus(7, None)

    run(scenario())


def test_cancelled_waiter_does_not_cancel_supervision(run: Runner[None]) -> None:
    async def scenario() -> None:
        proc = await start(["/bin/sh", "-c", "sleep 0.3; exit 4"], Output())
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(proc.wait(), 0.01)
        assert (await done(proc)).exit_code == 4

    run(scenario())


def test_output_callback_error_does_not_block_the_job(run: Runner[None]) -> None:
    calls: list[bytes] = []

    def bad(stream: str, chunk: bytes) -> None:
        calls.append(chunk)
        raise RuntimeError("sink broken")

    script = "import sys\nfor _ in range(40): sys.stdout.buffer.write(b'x' * 65536)\n"

    async def scenario() -> None:
        proc = await Process.start([PY, "-c", script], env=ENV, cwd=None, on_output=bad)
        assert (await done(proc)).ok
        assert sum(map(len, calls)) == 40 * 65536

    run(scenario())


def test_signals_after_exit_are_harmless(run: Runner[None]) -> None:
    async def scenario() -> None:
        proc = await start(["/bin/sh", "-c", "read x < /dev/null; exit 0"], Output())
        st = await done(proc)
        assert proc.returncode_ready
        proc.signal_tree(signal.SIGTERM)
        proc.kill()
        await asyncio.wait_for(proc.stop(1.0), 5)
        assert await proc.wait() == st

    run(scenario())


# ------------------------------------------------------------------------------ stop / kill


def test_stop_terminates_a_well_behaved_process(run: Runner[None]) -> None:
    async def scenario() -> None:
        proc = await start(["sleep", "30"], Output())
        assert not proc.returncode_ready
        t0 = time.monotonic()
        await asyncio.wait_for(proc.stop(20), 10)
        st = await done(proc)
        assert time.monotonic() - t0 < 5
        assert st == ExitStatus(exit_code=None, signal=signal.SIGTERM)

    run(scenario())


def test_stop_escalates_to_sigkill_after_grace(run: Runner[None]) -> None:
    async def scenario() -> None:
        out = Output()
        proc = await start(["/bin/sh", "-c", 'trap "" TERM; sleep 30 & echo $!; wait'], out)
        sleeper = await wait_until(
            lambda: out.stdout.endswith(b"\n") and int(out.stdout), what="sleep pid"
        )
        t0 = time.monotonic()
        await asyncio.wait_for(proc.stop(0.5), 10)
        assert time.monotonic() - t0 >= 0.45
        st = await done(proc)
        assert st == ExitStatus(exit_code=None, signal=signal.SIGKILL)
        await all_gone([proc.pid, sleeper])

    run(scenario())


@pytest.mark.parametrize("how", ["kill", "stop"])
def test_whole_tree_is_stopped(run: Runner[None], tmp_path: Path, how: str) -> None:
    cmd = "sh -c 'sleep 300 & echo $! > gpid; wait' & echo $! > cpid; wait"

    async def scenario() -> None:
        proc = await start(["/bin/sh", "-c", cmd], Output(), cwd=tmp_path)
        child = await wait_until(pid_file(tmp_path / "cpid"), what="child pid")
        grandchild = await wait_until(pid_file(tmp_path / "gpid"), what="grandchild pid")
        tree = [proc.pid, child, grandchild]
        assert all(alive(p) for p in tree)
        assert set(tree) <= set(session_members(proc.pid))
        if how == "kill":
            proc.kill()
        else:
            await asyncio.wait_for(proc.stop(5), 10)
        st = await done(proc)
        assert st.signal == (signal.SIGKILL if how == "kill" else signal.SIGTERM)
        await all_gone(tree)

    run(scenario())


GRANDCHILD = """
import os, signal, sys, time
os.setpgid(0, 0)
if sys.argv[1] == "stubborn":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
with open("gpid.tmp", "w") as f:
    f.write(f"{os.getpid()}\\n")
os.rename("gpid.tmp", "gpid")
time.sleep(300)
"""


def test_grandchild_in_its_own_process_group_is_killed(run: Runner[None], tmp_path: Path) -> None:
    (tmp_path / "gc.py").write_text(GRANDCHILD)
    cmd = "sh -c '\"$PY\" gc.py stubborn & wait' & wait"

    async def scenario() -> None:
        proc = await start(["/bin/sh", "-c", cmd], Output(), cwd=tmp_path)
        grandchild = await wait_until(pid_file(tmp_path / "gpid"), what="grandchild pid")
        fields = stat_fields(grandchild)
        assert int(fields[2]) == grandchild != proc.pid  # its own process group
        assert int(fields[3]) == proc.pid  # ... but still in the job's session
        await asyncio.wait_for(proc.stop(0.3), 10)  # it ignores SIGTERM: needs the escalation
        assert (await done(proc)).signal == signal.SIGTERM  # the main shell died of SIGTERM
        await all_gone([proc.pid, grandchild])

    run(scenario())


def test_process_with_a_nasty_comm_is_found(run: Runner[None]) -> None:
    script = (
        "import sys, time\n"
        "open('/proc/self/comm', 'w').write('a) Z 1 1 1 (b')\n"
        "print('ready', flush=True)\n"
        "time.sleep(300)\n"
    )

    async def scenario() -> None:
        out = Output()
        cmd = '"$PY" -c "$SCRIPT" & echo $!; wait'
        proc = await start(["/bin/sh", "-c", cmd], out, SCRIPT=script)
        await wait_until(lambda: out.stdout.endswith(b"ready\n"), what="ready")
        child = int(out.stdout.split()[0])
        assert comm(child) == "a) Z 1 1 1 (b"
        assert child in session_members(proc.pid)
        proc.kill()
        assert (await done(proc)).signal == signal.SIGKILL
        await all_gone([child])

    run(scenario())


# ------------------------------------------------------------------------------- leftovers

LEFTOVER_MAIN = """
import os, sys, time
os.posix_spawn(sys.executable, [sys.executable, "gc.py", sys.argv[1]], os.environ)
while not os.path.exists("gpid"):
    time.sleep(0.01)
print("main done", flush=True)
"""


@pytest.mark.parametrize("kind", ["polite", "stubborn"])
def test_leftovers_are_killed_after_a_normal_exit(
    run: Runner[None], tmp_path: Path, kind: str
) -> None:
    (tmp_path / "gc.py").write_text(GRANDCHILD)
    (tmp_path / "main.py").write_text(LEFTOVER_MAIN)

    async def scenario() -> None:
        out = Output()
        proc = await start([PY, "main.py", kind], out, cwd=tmp_path)
        proc.leftover_grace = 0.3
        proc.drain_timeout = 30  # EOF must come from the leftover dying, not from giving up
        t0 = time.monotonic()
        st = await done(proc, 20)
        elapsed = time.monotonic() - t0
        leftover = pid_file(tmp_path / "gpid")()
        assert leftover is not None
        assert st == ExitStatus(exit_code=0, signal=None)
        assert out.stdout == b"main done\n"
        assert elapsed < 5
        assert not alive(leftover)  # gone before wait() returned
        if kind == "stubborn":
            assert elapsed >= 0.25  # it got the grace, then SIGKILL

    run(scenario())


def test_background_sleep_left_behind_is_killed(run: Runner[None], tmp_path: Path) -> None:
    async def scenario() -> None:
        cmd = "sleep 100 & echo $! > bg; echo started"
        proc = await start(["/bin/sh", "-c", cmd], Output(), cwd=tmp_path)
        proc.drain_timeout = 30
        st = await done(proc, 20)
        assert st.ok
        leftover = pid_file(tmp_path / "bg")()
        assert leftover is not None and not alive(leftover)

    run(scenario())


ESCAPEE_MAIN = """
import os, sys
pid = os.posix_spawn("/bin/sleep", ["sleep", "300"], os.environ, setsid=True)
print(pid, flush=True)
"""


def test_escaped_process_holding_the_pipe_does_not_hang_wait(run: Runner[None]) -> None:
    escaped: list[int] = []

    async def scenario() -> None:
        out = Output()
        proc = await start([PY, "-c", ESCAPEE_MAIN], out)
        proc.drain_timeout = 0.3
        t0 = time.monotonic()
        st = await done(proc)
        escaped.append(int(out.stdout))
        assert st.ok
        assert 0.25 <= time.monotonic() - t0 < 5
        assert alive(escaped[0])  # setsid() escapes the tree: documented

    try:
        run(scenario())
    finally:
        for pid in escaped:
            os.kill(pid, signal.SIGKILL)


# ------------------------------------------------------------------------------- resources


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def test_no_fd_is_left_open(run: Runner[None], tmp_path: Path) -> None:
    escaped: list[int] = []

    async def scenario() -> None:
        a = await start(["/bin/sh", "-c", "echo hi; sleep 100 & exit 2"], Output(), cwd=tmp_path)
        b = await start(["sleep", "100"], Output())
        out = Output()
        c = await start([PY, "-c", ESCAPEE_MAIN], out)
        c.drain_timeout = 0.1
        b.kill()
        statuses = await asyncio.gather(a.wait(), b.wait(), c.wait())
        assert [st.exit_code for st in statuses] == [2, None, 0]
        escaped.append(int(out.stdout))

    before = open_fds()
    try:
        run(scenario())
    finally:
        for pid in escaped:
            os.kill(pid, signal.SIGKILL)
    assert open_fds() == before


def test_loop_shutdown_kills_an_unwaited_job(run: Runner[None]) -> None:
    pids: list[int] = []

    async def scenario() -> None:
        proc = await start(["/bin/sh", "-c", "sleep 300 & echo $!; wait"], out := Output())
        await wait_until(lambda: out.stdout.endswith(b"\n"), what="child pid")
        pids.extend([proc.pid, int(out.stdout)])
        # return without waiting: closing the loop cancels the supervision

    run(scenario())
    assert not os.path.exists(f"/proc/{pids[0]}")  # killed and reaped, not a zombie
    deadline = time.monotonic() + 5
    while alive(pids[1]):
        assert time.monotonic() < deadline, "child survived the loop shutdown"
        time.sleep(0.01)


# ----------------------------------------------------------------------------------- parsing


def test_parse_stat_splits_at_the_last_paren() -> None:
    assert _parse_stat(b"42 (a) S 9 (b)) R 1 2 3 4 5\n") == (b"R", 3)
    assert _parse_stat(b"42 (x y) Z 1 7 7 0 0\n") == (b"Z", 7)
    assert _parse_stat(b"garbage") is None
    assert _parse_stat(b"1 (x) S 1") is None


def test_many_exits_together_share_leftover_scans_and_leave_no_stragglers(
    run: Runner[None], tmp_path: Path
) -> None:
    """60 jobs end at once, every other one leaving a background `sleep`: every leftover is
    killed before its wait() returns, and the /proc scans are shared instead of one per exit."""
    n = 60

    async def scenario() -> None:
        go = tmp_path / "go"
        procs = []
        for i in range(n):
            bg = f"sleep 100 & echo $! > bg{i}; " if i % 2 else ""
            cmd = f"{bg}while [ ! -e go ]; do sleep 0.01; done"
            procs.append(await start(["/bin/sh", "-c", cmd], Output(), cwd=tmp_path))
        for p in procs:
            p.drain_timeout = 30
        for i in range(1, n, 2):
            await wait_until(pid_file(tmp_path / f"bg{i}"), what=f"bg{i}")
        before = scanner().scans
        go.touch()
        statuses = await asyncio.wait_for(asyncio.gather(*(p.wait() for p in procs)), 60)
        assert all(st.ok for st in statuses)
        for i in range(1, n, 2):
            leftover = pid_file(tmp_path / f"bg{i}")()
            assert leftover is not None and not alive(leftover)
        assert scanner().scans - before < n  # one scan per exit before the scanner

    run(scenario())


# -- armed processes (spawned ahead, released at the instant) -------------------------------------


async def start_armed(argv: list[str], out: Output, tmp: Path) -> Process:
    return await Process.start(argv, env=dict(ENV), cwd=str(tmp), on_output=out, armed=True)


def test_an_armed_command_runs_only_once_released_exactly_as_sh_c_would(run, tmp_path):
    marker = tmp_path / "ran"
    script = f'echo "args=$# var=${{__cronmesh_cmd-unset}}"; read x; echo "stdin=$?"; : > {marker}'

    async def main() -> None:
        out = Output()
        proc = await start_armed(["/bin/sh", "-c", script], out, tmp_path)
        await asyncio.sleep(0.3)
        assert not marker.exists() and out.stdout == b""  # held
        assert proc.release()
        st = await proc.wait()
        assert st.exit_code == 0 and marker.exists()
        # no positional parameter, no variable of ours, stdin is /dev/null (read fails at EOF)
        assert out.stdout == b"args=0 var=unset\nstdin=1\n"

    run(main())


def test_an_armed_argv_is_executed_with_its_arguments(run, tmp_path):
    async def main() -> None:
        out = Output()
        proc = await start_armed(
            [PY, "-c", "import sys; print(sys.argv[1:])", "a b", "c"], out, tmp_path
        )
        assert proc.release()
        assert (await proc.wait()).exit_code == 0
        assert out.stdout == b"['a b', 'c']\n"

    run(main())


def test_a_disarmed_process_exits_without_running_anything(run, tmp_path):
    marker = tmp_path / "ran"

    async def main() -> None:
        out = Output()
        proc = await start_armed(["/bin/sh", "-c", f": > {marker}"], out, tmp_path)
        proc.disarm()  # as when the run is cancelled, or the node goes away, before its instant
        st = await proc.wait()
        assert st.exit_code == ARMED_EXIT and not marker.exists()

    run(main())
