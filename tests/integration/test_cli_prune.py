"""`cronmesh apply --prune` deletes only after a yes: asked through a real pseudo-terminal, or
given with `--yes`; refused when stdin is not a terminal (issue #22 item 4, D250)."""

from __future__ import annotations

import asyncio
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

from tests.api_helpers import JOBS
from tests.conftest import ROOT, cli_env


def run_cli(url: str, *args: str) -> tuple[int, str, str]:
    """`cronmesh --api URL ARGS…` with stdin not a terminal (even when pytest's is one)."""
    res = subprocess.run(
        [sys.executable, "-m", "nodes.cli", "--api", url, *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        cwd=str(ROOT),
        env=cli_env(),
        timeout=60,
    )
    return res.returncode, res.stdout, res.stderr


def answer_prompt(url: str, folder: Path, answer: bytes, deadline: float = 60) -> tuple[int, str]:
    """Run `cronmesh apply -f FOLDER --prune` on a pseudo-terminal, answer its question with
    ``answer`` once it is asked; returns (exit code, everything it wrote to the terminal)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "nodes.cli", "--api", url, "apply", "-f", str(folder), "--prune"],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        cwd=str(ROOT),
        env=cli_env(),
        close_fds=True,
    )
    os.close(slave)
    seen = b""
    answered = False
    end = time.monotonic() + deadline
    try:
        while time.monotonic() < end:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                seen += chunk
            if not answered and b"[y/N]" in seen:
                os.write(master, answer)
                answered = True
            if proc.poll() is not None and not ready:
                break
        code = proc.wait(timeout=max(1.0, end - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    assert answered, f"no question asked; the terminal showed: {seen!r}"
    return code, seen.decode(errors="replace")


async def job_names(cluster) -> list[str]:
    _, body = await cluster.request("GET", JOBS)
    return sorted(j["name"] for j in body["jobs"])


async def test_apply_prune_asks_on_a_terminal_and_needs_yes_otherwise(cluster, tmp_path: Path):
    await cluster.start()
    url = cluster.url()
    for name in ("kept", "stray-1", "stray-2"):
        await cluster.request("POST", JOBS, json={"name": name, "command": "true"})
    folder = tmp_path / "jobs"
    folder.mkdir()
    (folder / "kept.yaml").write_text("name: kept\ncommand: 'true'\n")
    (folder / "new.yaml").write_text("name: new\ncommand: 'true'\n")

    # diff without --prune says what --prune would delete; with it, lists the deletions
    code, out, err = await asyncio.to_thread(run_cli, url, "diff", "-f", str(folder))
    assert code == 1, err
    assert "+ job default/new (create)" in out and "(delete)" not in out
    assert "(--prune would delete them): job default/stray-1, job default/stray-2" in out
    code, out, _ = await asyncio.to_thread(run_cli, url, "diff", "-f", str(folder), "--prune")
    assert code == 1 and "- job default/stray-1 (delete)" in out
    assert "- job default/stray-2 (delete)" in out

    # apply without --prune creates, deletes nothing, and says what it kept
    code, out, err = await asyncio.to_thread(run_cli, url, "apply", "-f", str(folder))
    assert code == 0, err
    assert "+ job default/new (create)" in out and "kept (--prune would delete them)" in out
    await cluster.request("DELETE", f"{JOBS}/new")

    # stdin not a terminal (run_cli's is /dev/null), no --yes: refused, nothing written
    code, out, err = await asyncio.to_thread(run_cli, url, "apply", "-f", str(folder), "--prune")
    assert code == 2
    assert "pass --yes" in err and "- job default/stray-1 (delete)" in err
    assert await job_names(cluster) == ["kept", "stray-1", "stray-2"]

    # on a terminal, "n": the question lists what would go, nothing is deleted or created
    code, screen = await asyncio.to_thread(answer_prompt, url, folder, b"n\n")
    assert code == 1, screen
    assert "will delete 2 object(s)" in screen and "- job default/stray-2 (delete)" in screen
    assert "nothing was changed" in screen
    assert await job_names(cluster) == ["kept", "stray-1", "stray-2"]

    # an empty answer is a no too
    code, screen = await asyncio.to_thread(answer_prompt, url, folder, b"\n")
    assert code == 1 and await job_names(cluster) == ["kept", "stray-1", "stray-2"]

    # "y": created and deleted
    code, screen = await asyncio.to_thread(answer_prompt, url, folder, b"y\n")
    assert code == 0, screen
    assert "- job default/stray-1 (delete)" in screen
    assert await job_names(cluster) == ["kept", "new"]


async def test_apply_prune_with_yes_needs_no_terminal(cluster, tmp_path: Path):
    await cluster.start()
    url = cluster.url()
    await cluster.request("POST", JOBS, json={"name": "stray", "command": "true"})
    (tmp_path / "a.yaml").write_text("name: a\ncommand: 'true'\n")
    code, out, err = await asyncio.to_thread(
        run_cli, url, "apply", "-f", str(tmp_path), "--prune", "--yes"
    )
    assert code == 0, err
    assert "- job default/stray (delete)" in out
    assert await job_names(cluster) == ["a"]
    # --dry-run never asks and never deletes
    await cluster.request("POST", JOBS, json={"name": "stray", "command": "true"})
    code, out, _ = await asyncio.to_thread(
        run_cli, url, "apply", "-f", str(tmp_path), "--prune", "--dry-run"
    )
    assert code == 0 and "[dry run]" in out
    assert await job_names(cluster) == ["a", "stray"]
