"""An address that accepts a connection and never answers (a hung node, a firewall's tarpit) is
named with what happened, not a bare "timed out" (D509)."""

from __future__ import annotations

import argparse
import socket

import pytest

from nodes.cli import client, logs


def test_an_api_that_never_answers_is_named(monkeypatch):
    monkeypatch.setattr(client, "TIMEOUT", 0.3)
    monkeypatch.setenv("CRONMESH_TOKEN", "cm_x")
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)  # the kernel accepts; nobody reads or answers
        api = f"http://127.0.0.1:{listener.getsockname()[1]}"
        args = argparse.Namespace(api=api, token=None)
        with pytest.raises(client.ApiError) as info:
            client.call(args, "GET", "/status")
    message = info.value.describe()
    assert f"cannot reach the cronmesh API at {api} (no answer within 0.3 s)" in message, message


def test_a_log_read_that_never_answers_is_named(monkeypatch, capsys):
    monkeypatch.setattr(logs, "READ_TIMEOUT", 0.3)
    monkeypatch.setenv("CRONMESH_TOKEN", "cm_x")
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        api = f"http://127.0.0.1:{listener.getsockname()[1]}"
        args = argparse.Namespace(api=api, token=None, attempt=None, follow=False, tail=None)
        assert logs.print_logs(args, "/api/v1/projects/default/runs/r1/logs") == 1
    err = capsys.readouterr().err
    assert f"cannot reach the cronmesh API at {api} (no answer within 0.3 s)" in err, err
