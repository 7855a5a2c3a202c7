"""Metrics of log shipping. Created unregistered: the node registers `COLLECTORS` in its own
registry (`nodes/metrics.py`), so `logstore` does not import `nodes` (D192)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

SPOOL_BACKLOG_BYTES = Gauge(
    "cronmesh_log_spool_backlog_bytes",
    "Bytes of spooled log frames not yet in the log store",
    registry=None,
)
SPOOL_BACKLOG_FILES = Gauge(
    "cronmesh_log_spool_backlog_files",
    "Finished attempts whose log waits for upload",
    registry=None,
)
UPLOADS = Counter(
    "cronmesh_log_uploads",
    "Log uploads by kind and outcome",
    ["kind", "outcome"],
    registry=None,
)
UPLOADED_BYTES = Counter(
    "cronmesh_log_uploaded_bytes", "Bytes of log text written to the store", registry=None
)
PACKED_LOGS = Counter(
    "cronmesh_log_packed", "Finished logs written as part of a pack (D440)", registry=None
)

COLLECTORS = (SPOOL_BACKLOG_BYTES, SPOOL_BACKLOG_FILES, UPLOADS, UPLOADED_BYTES, PACKED_LOGS)
