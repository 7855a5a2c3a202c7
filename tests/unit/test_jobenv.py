"""The job environment allow-list and the node's secrets read from files (pure parts)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from cluster.errors import InvalidInput
from nodes.config_sources import SECRET_VARIABLES, load_config
from nodes.executor.jobenv import DEFAULT_PATH, SOURCE_ROOT, base_env, python_path

NODE_ENV = {
    "PATH": "/opt/bin:/usr/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
    "LC_TIME": "de_DE.UTF-8",
    "TZ": "Europe/Paris",
    "CRONMESH_ADMIN_PASSWORD": "secret-pass",
    "AWS_SECRET_ACCESS_KEY": "aws-secret",
    "CRONMESH_ETCD": "http://etcd:2379",
    "HTTP_PROXY": "http://proxy:3128",
    "PYTHONPATH": "/srv/app",
}


def test_only_the_allow_list_reaches_a_job():
    env = base_env(NODE_ENV)
    assert env == {
        "PATH": "/opt/bin:/usr/bin",
        "HOME": "/root",
        "LANG": "C.UTF-8",
        "LC_TIME": "de_DE.UTF-8",
        "TZ": "Europe/Paris",
    }


def test_operators_add_fixed_variables_and_name_node_variables():
    env = base_env(NODE_ENV, extra={"STAGE": "prod", "TZ": "UTC"}, passthrough=["HTTP_PROXY", "NO"])
    assert (
        env["STAGE"] == "prod" and env["TZ"] == "UTC" and env["HTTP_PROXY"] == "http://proxy:3128"
    )
    assert "NO" not in env and "CRONMESH_ADMIN_PASSWORD" not in env


def test_a_node_without_path_gives_jobs_a_default_one():
    assert base_env({})["PATH"] == DEFAULT_PATH


def test_python_jobs_import_cronmesh_and_the_nodes_path():
    assert python_path(NODE_ENV) == os.pathsep.join([SOURCE_ROOT, "/srv/app"])
    assert python_path({}) == SOURCE_ROOT


def test_secrets_come_from_files_and_a_value_wins(tmp_path):
    (tmp_path / "pw").write_text("from-a-file-123\nsecond line ignored\n")
    (tmp_path / "aws").write_text("AKIAFROMFILE\n")
    (tmp_path / "smtp").write_text("smtp://u:p@mail:25?from=a@b\n")
    env = {
        "CRONMESH_ADMIN_PASSWORD_FILE": str(tmp_path / "pw"),
        "AWS_ACCESS_KEY_ID_FILE": str(tmp_path / "aws"),
        "AWS_SECRET_ACCESS_KEY": "inline-secret",
        "CRONMESH_SMTP_URL_FILE": str(tmp_path / "smtp"),
        "CRONMESH_PEER_SECRET": "inline-peer-secret-0123",
        "CRONMESH_PEER_SECRET_FILE": str(tmp_path / "pw"),
    }
    config = load_config({}, env)
    assert config.admin_password == "from-a-file-123"
    assert config.s3_access_key_id == "AKIAFROMFILE"
    assert config.s3_secret_access_key == "inline-secret"
    assert config.smtp_url == "smtp://u:p@mail:25?from=a@b"
    assert config.peer_secret == "inline-peer-secret-0123"
    shown = repr(config)
    assert "from-a-file" not in shown and "inline-secret" not in shown and "u:p@" not in shown


def test_an_unreadable_secret_file_is_an_error_naming_the_setting(tmp_path):
    with pytest.raises(InvalidInput) as err:
        load_config({}, {"CRONMESH_ADMIN_TOKEN_FILE": str(tmp_path / "missing")})
    assert err.value.field == "admin_token"


def test_job_env_settings_parse_and_refuse_bad_names():
    config = load_config(
        {"job_env": ["A=1", "B=x=y"]}, {"CRONMESH_JOB_ENV_PASSTHROUGH": "HTTP_PROXY, NO_PROXY"}
    )
    assert config.job_env == {"A": "1", "B": "x=y"}
    assert config.job_env_passthrough == ["HTTP_PROXY", "NO_PROXY"]
    with pytest.raises(InvalidInput) as err:
        load_config({"job_env": ["1BAD=x"]}, {})
    assert err.value.field == "job_env"
    with pytest.raises(InvalidInput):
        load_config({}, {"CRONMESH_JOB_ENV_PASSTHROUGH": "A-B"})


def test_every_secret_variable_is_scrubbed_from_the_process_and_proc_environ():
    env = {var: f"value-of-{var.lower()}" for var in SECRET_VARIABLES}
    code = (
        "import os\n"
        "from nodes.config_sources import SECRET_VARIABLES\n"
        "from nodes.executor.jobenv import scrub_secrets\n"
        "scrub_secrets(SECRET_VARIABLES)\n"
        "from nodes.executor.jobenv import protect_process\n"
        "assert protect_process()\n"
        "print(open(f'/proc/{os.getpid()}/environ', 'rb').read().decode(errors='replace'))\n"
        "print(sorted(k for k in os.environ if k in SECRET_VARIABLES))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, **env, "KEEP_ME": "still-here"},
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    assert "still-here" in out and out.rstrip().endswith("[]")  # and it made itself non-dumpable
    for value in env.values():
        assert value not in out
