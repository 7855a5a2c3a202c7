"""The node fixtures' teardown checks (tests/conftest.py, D179): exit codes, node logs."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import structlog

from tests.conftest import LogWatch, NodeProcess


def fake_node(tmp_path: Path, code: int | None, log: str = "", sent: set[int] = frozenset()):
    node = NodeProcess.__new__(NodeProcess)
    node.node_id, node.log_path = "n1", tmp_path / "n1.log"
    node.log_path.write_text(log)
    node.proc = SimpleNamespace(poll=lambda: code)  # type: ignore[assignment]
    node.sent, node.expected_codes, node.problems = set(sent), set(), []
    return node


def test_exit_codes_a_test_did_not_cause_are_problems(tmp_path):
    assert fake_node(tmp_path, 0).exit_problem() is None
    assert fake_node(tmp_path, -9, sent={9}).exit_problem() is None  # the test SIGKILLed it
    assert fake_node(tmp_path, -15).exit_problem() == "exit code -15"
    assert fake_node(tmp_path, 1).exit_problem() == "exit code 1"
    expected = fake_node(tmp_path, 2)
    expected.expected_codes.add(2)
    assert expected.exit_problem() is None


def test_exceptions_in_a_node_log_are_problems_unless_allowed(tmp_path):
    log = "\n".join(
        [
            '{"event": "registered", "level": "info"}',
            '{"event": "cannot schedule job; retrying in 30 s", "exception": "Traceback ..."}',
            '{"event": "worker task failed", "error": "KeyError()"}',
            "Traceback (most recent call last):",
        ]
    )
    node = fake_node(tmp_path, 0, log)
    assert len(node.log_problems([])) == 3
    assert len(node.log_problems([re.compile("cannot schedule job")])) == 2
    assert fake_node(tmp_path, 0, '{"event": "lease lost"}').log_problems([]) == []


def test_log_watch_records_logged_exceptions_of_in_process_nodes():
    watch = LogWatch([re.compile("expected one")])
    config = structlog.get_config()
    structlog.configure(processors=[watch, *config["processors"]])
    try:
        log = structlog.get_logger("t")
        log.info("fine")
        try:
            raise KeyError("boom")
        except KeyError:
            log.exception("cannot advance execution")
            log.exception("expected one")
        log.error("worker task failed", error="x")
    finally:
        structlog.configure(processors=config["processors"])
    assert len(watch.found) == 2
    assert "cannot advance execution" in watch.found[0] and "boom" in watch.found[0]
