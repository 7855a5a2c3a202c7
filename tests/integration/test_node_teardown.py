"""The process fixtures' teardown (D326): a node stopped right after it was started is not
killed half-started by the SIGTERM (exit -15 before its handler exists), it stops gracefully."""

from __future__ import annotations

from pathlib import Path

from nodes.devtools.embedded import free_port
from tests.conftest import ProcessCluster


def test_a_node_stopped_while_still_starting_exits_0(tmp_path: Path, prefix: str) -> None:
    # No etcd at all: the node starts, logs "node started", then keeps retrying etcd.
    cluster = ProcessCluster([f"http://127.0.0.1:{free_port()}"], prefix, tmp_path)
    node = cluster.start("early")
    assert not node.started()  # the interpreter is still importing: no handler yet
    cluster.close_and_check()  # waits for "node started", then one SIGTERM: exit 0
    assert node.proc.returncode == 0
    assert node.started()
