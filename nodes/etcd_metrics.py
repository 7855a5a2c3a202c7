"""A gRPC client interceptor that times every unary etcd request (cronmesh_etcd_request_seconds)
and counts failures (cronmesh_etcd_errors), without the etcd wrapper knowing about Prometheus."""

from __future__ import annotations

import time
from typing import Any

import grpc

from nodes import metrics


class EtcdMetricsInterceptor(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    async def intercept_unary_unary(
        self, continuation: Any, client_call_details: Any, request: Any
    ) -> Any:
        method = client_call_details.method
        if isinstance(method, bytes):
            method = method.decode()
        name = method.rsplit("/", 1)[-1]
        start = time.perf_counter()
        outcome = "ok"
        try:
            call = await continuation(client_call_details, request)
            await call
            return call
        except grpc.aio.AioRpcError as exc:
            outcome = exc.code().name
            metrics.ETCD_ERRORS.labels(name).inc()
            raise
        except Exception:
            outcome = "error"
            metrics.ETCD_ERRORS.labels(name).inc()
            raise
        finally:
            metrics.ETCD_LATENCY.labels(name, outcome).observe(time.perf_counter() - start)
