"""CI's mutation check (D175): every named safety check, removed from a copy of the code, makes
its tests fail. Runs ``python -m tests.mutations`` (about 45 s on 2 idle cores)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_every_mutation_is_caught():
    res = subprocess.run(
        [sys.executable, "-m", "tests.mutations"],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert res.returncode == 0, res.stdout[-6000:] + res.stderr[-2000:]
