"""What the log service needs to know, as a value of its own (so `logstore` never reads a node's
configuration: the node builds this from its `NodeConfig`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from logstore.s3 import S3Credentials


@dataclass(frozen=True, slots=True)
class LogSettings:
    spool_path: Path  # frames of running and unshipped attempts
    run_cap: int  # bytes of output kept per attempt
    disk_cap: int  # bytes the spool may hold in all
    store_url: str | None  # s3://bucket/prefix, file:///path, a path, or None for local_root
    local_root: Path  # the folder store used when store_url is None
    s3_endpoint: str | None = None
    s3_region: str | None = None
    segment_interval: float = 2.0  # seconds between uploaded segments of a running attempt
    s3_credentials: S3Credentials | None = None  # else the environment's (boto3's chain)
    pack_window: float = 1.0  # seconds a pack of small S3 logs stays open (D440); 0: no packs
