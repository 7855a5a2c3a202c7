"""Benchmarks of cronmesh against the numbers in the project goals (``python -m bench.run``)."""

from __future__ import annotations

import os

# The benchmark's own etcd client sits idle through whole measurement windows; etcd then answers
# its keep-alive pings with a GOAWAY ("too_many_pings"), which gRPC prints to the terminal. The
# reads are retried (bench.harness), so silence gRPC's logging in this process only: node
# processes get the environment the user gave (see NodeProc).
USER_GRPC_VERBOSITY = os.environ.get("GRPC_VERBOSITY")
os.environ.setdefault("GRPC_VERBOSITY", "NONE")
