"""Metrics of log shipping (served with the node's other metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from nodes.metrics import REGISTRY

SPOOL_BACKLOG_BYTES = Gauge(
    "cronmesh_log_spool_backlog_bytes",
    "Bytes of spooled log frames not yet in the log store",
    registry=REGISTRY,
)
SPOOL_BACKLOG_FILES = Gauge(
    "cronmesh_log_spool_backlog_files",
    "Finished attempts whose log waits for upload",
    registry=REGISTRY,
)
UPLOADS = Counter(
    "cronmesh_log_uploads",
    "Log uploads by kind and outcome",
    ["kind", "outcome"],
    registry=REGISTRY,
)
UPLOADED_BYTES = Counter(
    "cronmesh_log_uploaded_bytes", "Bytes of log text written to the store", registry=REGISTRY
)
