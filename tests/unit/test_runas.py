"""Run-as decisions (pure, D142) and the private run folder's result file (D143)."""

from __future__ import annotations

import os
import stat

import pytest

from cluster.runas import NodeRunAs, check_node_policy, decide, project_refusal, servable
from nodes.executor.workdir import (
    clean_leftovers,
    make_run_dir,
    read_result,
    remove_run_dir,
    run_dir,
    secure_dir,
    secure_node_dirs,
)

ROOT_NODE = NodeRunAs(
    "n1", is_root=True, own_user="root", users=frozenset({"etl", "web"}), default="nobody"
)
DYNAMIC_NODE = NodeRunAs("n1", is_root=True, own_user="root", users=frozenset({"etl"}))
ROOT_OK = NodeRunAs("n1", True, "root", frozenset({"etl"}), default="root", allow_root=True)
PLAIN = NodeRunAs("n2", is_root=False, own_user="cronmesh", users=frozenset({"etl"}))


@pytest.mark.parametrize(
    ("policy", "user", "group", "expect"),
    [
        # a root node: the default user for jobs without run_as, listed users, never root
        (ROOT_NODE, None, None, ("nobody", None, True, None)),
        (ROOT_NODE, "etl", None, ("etl", None, True, None)),
        (ROOT_NODE, "etl", "staff", ("etl", "staff", True, None)),
        (ROOT_NODE, "nobody", None, ("nobody", None, True, None)),
        (ROOT_NODE, "db", None, (None, None, False, "n1 may not run jobs as 'db'")),
        (ROOT_NODE, "root", None, (None, None, False, "n1 does not run jobs as root")),
        # the default (D205): a uid of the run's own; "dynamic" is no user a job may name
        (DYNAMIC_NODE, None, None, (None, None, True, None)),
        (DYNAMIC_NODE, "etl", None, ("etl", None, True, None)),
        (DYNAMIC_NODE, "dynamic", None, (None, None, False, "n1 may not run jobs as 'dynamic'")),
        # root explicitly allowed: as itself (no switch), or root with another group
        (ROOT_OK, None, None, ("root", None, False, None)),
        (ROOT_OK, "root", None, ("root", None, False, None)),
        (ROOT_OK, "root", "adm", ("root", "adm", True, None)),
        (ROOT_OK, "etl", None, ("etl", None, True, None)),
        # a node that is not root runs everything as itself, and nothing else
        (PLAIN, None, None, ("cronmesh", None, False, None)),
        (PLAIN, "cronmesh", None, ("cronmesh", None, False, None)),
        (PLAIN, "etl", None, (None, None, False, "n2 runs as 'cronmesh' and cannot switch users")),
        (
            PLAIN,
            "cronmesh",
            "adm",
            (None, None, False, "n2 runs as 'cronmesh' and cannot switch users"),
        ),
    ],
)
def test_decide(policy, user, group, expect):
    d = decide(user, group, policy)
    assert (d.user, d.group, d.switch, d.refusal) == expect
    assert d.dynamic == (policy is DYNAMIC_NODE and user is None)


def test_contradicting_node_settings_are_refused():
    assert check_node_policy(NodeRunAs("n", True, "root", default="root")) is not None
    assert check_node_policy(NodeRunAs("n", True, "root", frozenset({"root"}))) is not None
    assert check_node_policy(ROOT_OK) is None and check_node_policy(ROOT_NODE) is None


def test_nodes_advertise_the_users_they_can_serve():
    exists = {"nobody", "etl"}.__contains__
    assert servable(ROOT_NODE, exists) == ["etl", "nobody"]  # "web" does not exist here
    assert servable(ROOT_OK, exists) == ["etl", "root"]
    assert servable(PLAIN, exists) == ["cronmesh"]
    assert servable(DYNAMIC_NODE, {"etl", "dynamic"}.__contains__) == ["etl"]


def test_project_policy():
    assert project_refusal("a", None, []) is None
    assert project_refusal("a", "etl", ["etl"]) is None
    assert "project 'a' may not run jobs as 'root'" in project_refusal("a", "root", ["etl"])
    # the refusal says who changes it and how (D509)
    assert "a cluster admin adds it to the project's run_as_users (PUT /api/v1/projects/a" in (
        project_refusal("a", "root", ["etl"]) or ""
    )


def test_the_result_file_is_read_without_following_links(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text('{"stolen": true}')
    result = tmp_path / "result.json"
    assert read_result(result, 100) == (None, None)  # none written
    result.symlink_to(secret)
    data, error = read_result(result, 100)
    assert data is None and "symbolic link" in error
    result.unlink()
    os.mkfifo(result)  # would block a plain open
    data, error = read_result(result, 100)
    assert data is None and "not a regular file" in error
    result.unlink()
    result.write_bytes(b"x" * 101)
    assert "larger than 100" in read_result(result, 100)[1]
    result.write_bytes(b'{"rows": 1}')
    assert read_result(result, 100) == (b'{"rows": 1}', None)
    result.unlink()
    os.link(secret, result)  # where fs.protected_hardlinks is 0, any file the path reaches
    data, error = read_result(result, 100)
    assert data is None and "other links" in error


def test_node_folders_private_with_a_traverse_only_path_to_the_work_folder(tmp_path):
    data = tmp_path / "data"
    node = data / "n1"
    secure_node_dirs(data, [node, node / "spool", node / "logs"], node / "work")
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (data, node, *node.iterdir())}
    assert modes == {"data": 0o711, "n1": 0o711, "work": 0o711, "spool": 0o700, "logs": 0o700}
    # a work folder elsewhere: the data folder is closed entirely
    other = tmp_path / "other"
    secure_node_dirs(other, [other / "n1"], tmp_path / "work-elsewhere")
    assert stat.S_IMODE(other.stat().st_mode) == 0o700
    assert stat.S_IMODE((other / "n1").stat().st_mode) == 0o700


def test_a_shared_folder_given_as_data_folder_is_never_narrowed(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)  # like /tmp
    secure_dir(shared, 0o700)
    assert stat.S_IMODE(shared.stat().st_mode) == 0o1777


def test_run_folders_are_private_fresh_and_removed(tmp_path):
    folder = run_dir(tmp_path, "123", 2)
    make_run_dir(folder, None, None)
    (folder / "left").write_text("x")
    make_run_dir(folder, None, None)  # a leftover of the same attempt: replaced, empty
    assert list(folder.iterdir()) == [] and stat.S_IMODE(folder.stat().st_mode) == 0o700
    (folder / "sub").mkdir()
    (folder / "sub" / "link").symlink_to(tmp_path / "keep")
    (tmp_path / "keep").write_text("outside")
    remove_run_dir(folder)
    assert not folder.exists() and (tmp_path / "keep").read_text() == "outside"
    make_run_dir(run_dir(tmp_path, "9", 1), None, None)
    (tmp_path / "run-not-ours").mkdir()
    assert clean_leftovers(tmp_path) == 1 and (tmp_path / "run-not-ours").exists()
