"""Issue #22 item 7, the pure parts (D253, D254): which trigger parameters pass, where a node's
files go by default, how a document prints, and what `Connection refused` says."""

from __future__ import annotations

import argparse
import json

import pytest
import yaml

from cluster import params
from cluster.errors import InvalidInput
from nodes.cli.main import main
from nodes.cli.output import show
from nodes.config import NodeConfig
from nodes.devtools.embedded import free_port
from nodes.runtime.datadir import default_data_dir


@pytest.mark.parametrize(
    ("defaults", "schedules", "given", "warned"),
    [
        ({}, [], {}, False),
        ({"day": "today"}, [], {"day": "mon"}, False),
        ({}, [{"region": "eu"}], {"region": "us"}, False),  # declared by a schedule
        ({}, [], {"anything": "x"}, True),  # declares none: passed, with a warning
        ({}, [{}], {"anything": "x"}, True),
    ],
)
def test_parameters_a_trigger_may_pass(defaults, schedules, given, warned):
    names = params.declared(defaults, schedules)
    warnings = params.check_given("job j", names, given)
    assert bool(warnings) == warned
    if warned:
        assert warnings == [
            {
                "field": "parameters.anything",
                "message": "job j declares no parameters; passed anyway as CRONMESH_PARAM_ANYTHING",
            }
        ]


@pytest.mark.parametrize(
    ("defaults", "schedules", "given", "field"),
    [
        ({"day": "today"}, [], {"dya": "mon"}, "parameters.dya"),
        ({}, [{"region": "eu"}], {"region": "us", "zone": "a", "b": "c"}, "parameters.b"),
    ],
)
def test_an_undeclared_parameter_is_refused_when_the_job_declares_some(
    defaults, schedules, given, field
):
    with pytest.raises(InvalidInput) as err:
        params.check_given("job j", params.declared(defaults, schedules), given)
    assert err.value.field == field
    assert "it declares:" in err.value.message


@pytest.mark.parametrize(
    ("uid", "env", "expected"),
    [
        (0, {"HOME": "/root"}, "/var/lib/cronmesh"),
        (1000, {"HOME": "/home/ann"}, "/home/ann/.local/state/cronmesh"),
        (1000, {"HOME": "/home/ann", "XDG_STATE_HOME": "/srv/state"}, "/srv/state/cronmesh"),
        (1000, {"HOME": "/home/ann", "XDG_STATE_HOME": "rel"}, "/home/ann/.local/state/cronmesh"),
    ],
)
def test_default_data_folder_is_never_the_current_one(uid, env, expected):
    assert default_data_dir(env, uid) == expected


def test_a_node_config_without_data_dir_is_absolute():
    config = NodeConfig(node_id="x", etcd=["http://127.0.0.1:2379"])
    assert config.data_dir.startswith("/") and config.data_dir.endswith("cronmesh")
    assert NodeConfig(node_id="x", etcd=["http://e:1"], data_dir="d").data_dir == "d"


@pytest.mark.parametrize(
    ("output", "parse"), [("table", yaml.safe_load), ("yaml", yaml.safe_load), ("json", json.loads)]
)
def test_a_document_prints_as_yaml_unless_json_is_asked(capsys, output, parse):
    doc = {"name": "etl", "bindings": [{"node": "w1", "weight": 2}]}
    show(argparse.Namespace(output=output), doc)
    out = capsys.readouterr().out
    assert parse(out) == doc
    assert out.lstrip().startswith("{") == (output == "json")


def test_connection_refused_names_the_address_and_cronmesh_dev(capsys):
    api = f"http://127.0.0.1:{free_port()}"  # nobody listens there
    assert main(["--api", api, "job", "list"]) == 1
    err = capsys.readouterr().err
    assert f"cannot reach the cronmesh API at {api}" in err
    assert "Connection refused" in err and "`cronmesh dev`" in err and "--api" in err
    assert main(["--api", api, "run", "logs", "1234"]) == 1  # the streaming path too
    err = capsys.readouterr().err
    assert f"cannot reach the cronmesh API at {api}" in err and "`cronmesh dev`" in err
