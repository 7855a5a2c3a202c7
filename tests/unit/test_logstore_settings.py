"""`logstore` is configured by a value of its own and its metrics are registered by the node
(issue #20, D192): the node's settings reach the spool, the store and the uploader, and the
node's /metrics registry serves log shipping's collectors."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import generate_latest

from logstore.local import LocalFolderStore
from logstore.service import build_logs
from nodes.config import NodeConfig
from nodes.metrics import REGISTRY


def test_node_config_builds_the_log_settings(tmp_path: Path) -> None:
    cfg = NodeConfig(
        node_id="n1",
        data_dir=str(tmp_path),
        log_run_cap=4096,
        spool_disk_cap=2 * 1024 * 1024,
        log_segment_interval=7.5,
        log_store=f"file://{tmp_path / 'store'}",
    )
    settings = cfg.log_settings()
    assert settings.spool_path == tmp_path / "n1" / "spool"
    assert settings.local_root == tmp_path / "n1" / "logs"
    assert (settings.run_cap, settings.disk_cap) == (4096, 2 * 1024 * 1024)
    logs = build_logs(settings)
    try:
        assert isinstance(logs.store, LocalFolderStore)
        assert Path(logs.store.root) == tmp_path / "store"
        assert logs.uploader.segment_interval == 7.5
    finally:
        logs.store.close()


def test_the_node_registry_serves_log_shipping_metrics() -> None:
    text = generate_latest(REGISTRY).decode()
    for name in (
        "cronmesh_log_spool_backlog_bytes",
        "cronmesh_log_spool_backlog_files",
        "cronmesh_log_uploaded_bytes_total",
    ):
        assert name in text
