"""Prometheus view of etcd requests: the etcd wrapper reports each unary call to ``observe``
(cronmesh_etcd_request_seconds by method and outcome, cronmesh_etcd_errors), so ``cluster/``
stays free of Prometheus."""

from __future__ import annotations

from nodes import metrics


def observe(method: str, seconds: float, outcome: str) -> None:
    metrics.ETCD_LATENCY.labels(method, outcome).observe(seconds)
    if outcome not in ("ok", "cancelled"):
        metrics.ETCD_ERRORS.labels(method).inc()
