"""#22 item 3: the run install (.ci/install) needs no root and installs no test needs; the test
install (.ci/bootstrap, which CI's .ci/run calls) adds them on top of it."""

from __future__ import annotations

import re
import subprocess

from tests.conftest import ROOT

CI = ROOT / ".ci"


def _commands(path) -> list[str]:
    """The script's lines without comments (what it runs)."""
    return [
        ln.split("#", 1)[0] for ln in path.read_text().splitlines() if ln.split("#", 1)[0].strip()
    ]


def test_the_run_install_needs_no_root_no_apt_and_no_extras():
    body = "\n".join(_commands(CI / "install"))
    for word in ("apt-get", "sudo", "chromium", "helm", "playwright", "id -u"):
        assert word not in body, word
    pip = [ln for ln in body.splitlines() if "pip install" in ln]
    assert pip and all("[test" not in ln and "bench" not in ln for ln in pip), pip
    assert "--quiet" in pip[0] and '>>"$LOG"' in body  # quiet, logged, shown on failure
    assert "tail -n 40" in body


def test_the_test_install_builds_on_the_run_install_and_ci_calls_it():
    boot = "\n".join(_commands(CI / "bootstrap"))
    assert re.search(r"^\.ci/install --extras test,bench$", boot, re.M), boot
    assert "apt-get install -y chromium iptables" in boot
    assert ".ci/bootstrap && .venv/bin/pytest" in (CI / "run").read_text()


def test_a_wrong_argument_is_refused_before_anything_is_touched(tmp_path):
    res = subprocess.run(
        [str(CI / "install"), "--bogus"], capture_output=True, text=True, timeout=30
    )
    assert res.returncode == 2 and "unknown argument --bogus" in res.stderr, res
