"""A node started by hand in a git checkout wrote `.cronmesh/<node>/initial-admin-password` (and
its spools: job output, secrets masked or not) into the working tree, where `git add -A` commits
them (issue 22). Its files now default to a folder outside the current one (D254), and
`.cronmesh/` is ignored by git besides."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nodes.config_sources import load_config
from tests.conftest import ROOT


@pytest.mark.parametrize("home_state", [None, "state"])
def test_a_node_started_in_a_checkout_writes_nothing_there(tmp_path, monkeypatch, home_state):
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    monkeypatch.chdir(checkout)
    env = {"CRONMESH_NODE_ID": "n1", "CRONMESH_ETCD": "http://127.0.0.1:2379"}
    env["HOME"] = str(tmp_path / "home")
    if home_state:
        env["XDG_STATE_HOME"] = str(tmp_path / home_state)
    config = load_config({}, env=env)
    for path in (
        Path(config.data_dir),
        config.admin_password_path,
        config.spool_path,
        config.logs_path,
        config.work_path,
    ):
        assert path.is_absolute(), path
        resolved = path.resolve()
        assert not resolved.is_relative_to(checkout.resolve()), path
    expected = "/var/lib/cronmesh" if os.geteuid() == 0 else None
    if expected:
        assert config.data_dir == expected
    else:
        base = tmp_path / home_state if home_state else tmp_path / "home/.local/state"
        assert config.data_dir == str(base / "cronmesh")


def test_an_old_data_folder_in_the_checkout_is_ignored_by_git():
    ignored = (ROOT / ".gitignore").read_text().split()
    assert ".cronmesh/" in ignored and ".cronmesh-dev/" in ignored
