"""`cronmesh … | head -1`: when the reader of stdout goes away the CLI stops quietly (exit 141, as
a shell reports SIGPIPE), not with "cronmesh: [Errno 32] Broken pipe" on stderr."""

from __future__ import annotations

import os
import subprocess
import sys

# fd 1 is a pipe whose read end is closed before the command writes: every write gets EPIPE
CHILD = """
import os, sys
r, w = os.pipe()
os.close(r)
os.dup2(w, 1)
from nodes.cli.main import main
sys.exit(main(["completion", "bash"]))
"""


def test_closed_stdout_is_a_quiet_exit() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", CHILD],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    assert proc.returncode == 141, proc.stderr
    assert proc.stderr == ""
