"""A node's settings (`NodeConfig`): every field, its default and bounds, and how a value given as
text (an environment variable or a flag) is parsed. Where the values come from (file, environment,
flags, secret files) is `nodes.config_sources`."""

from __future__ import annotations

import ipaddress
import re
import socket
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cluster.etcd import MAX_MESSAGE, PAGE_KEYS
from cluster.links import PublicUrl
from cluster.models import USER_NAME_PATTERN
from cluster.quotas import (
    DEFAULT_BYTES,
    DEFAULT_JOBS,
    DEFAULT_RUN_HISTORY_BYTES,
    DEFAULT_WORKFLOWS,
    MAX_QUOTA,
    Quotas,
)
from cluster.runuids import check_range
from logstore.s3 import S3Credentials
from logstore.settings import LogSettings
from nodes.api.proxy import parse_networks
from nodes.runtime.datadir import default_data_dir
from nodes.worker.capacity import default_capacity

ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")


def _comma_list(value: Any) -> Any:
    """``"a, b,,c"`` (an environment variable or flag) → ``["a", "b", "c"]``; other values as is."""
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return value


class NodeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    node_id: str = Field(
        default_factory=socket.gethostname, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,62}$"
    )
    etcd: list[str] = Field(default_factory=lambda: ["http://127.0.0.1:2379"], min_length=1)
    listen: str = "127.0.0.1:8080"
    advertise: str | None = None  # host:port other nodes use to reach this one
    prefix: str = Field(default="/cronmesh", pattern=r"^/[A-Za-z0-9_.\-/]*[A-Za-z0-9_.\-]$")
    lease_ttl: int = Field(default=5, ge=2, le=300)
    capacity: int = Field(default_factory=default_capacity, ge=1, le=10_000)
    # runs held armed ahead of their instant (D121), apart from capacity, which bounds what runs
    max_armed: int = Field(default=512, ge=0, le=10_000)
    weight_budget: int | None = Field(default=None, ge=1, le=1_000_000)  # None: no budget
    owner: str = Field(default="", max_length=256)
    machine_id: int | None = Field(default=None, ge=0, le=1023)  # None: allocated through etcd
    handoff_delay: float = Field(default=1.0, ge=0, le=3600)  # see docs/placement.md
    # the leader writes a tick's run this long before it; workers start it on a local timer
    materialize_ahead: float = Field(default=1.5, ge=0, le=30)
    properties: dict[str, str] = Field(default_factory=dict)
    data_dir: str = Field(default_factory=default_data_dir)  # never the current folder (D254)
    log_dir: str | None = None
    work_dir: str | None = None
    drain_timeout: float = Field(default=30.0, ge=0)
    # a node down this long is forgotten (its record and admin state); 0: kept forever (D255)
    node_retention: float = Field(default=86400.0, ge=0, le=366 * 86400)
    etcd_timeout: float = Field(default=5.0, gt=0)
    log_format: str = Field(default="auto", pattern="^(auto|json|console)$")
    # A cgroup per run where the machine allows it (auto), or process sessions only (off): D150
    cgroups: str = Field(default="auto", pattern="^(auto|off)$")
    # identity and access (docs/security.md)
    admin_user: str = Field(default="admin", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@\-]{0,63}$")
    admin_password: str | None = Field(default=None, min_length=8, repr=False)
    admin_password_file: str | None = None
    admin_token: str | None = Field(default=None, min_length=20, repr=False)
    admin_token_file: str | None = None
    # a static credential that reads /metrics and /status only (Prometheus; D166)
    metrics_token: str | None = Field(default=None, min_length=20, max_length=512, repr=False)
    metrics_token_file: str | None = None
    session_ttl: int = Field(default=12 * 3600, ge=60, le=30 * 86400)
    security_level: int = Field(default=1, ge=0, le=1)
    peer_secret: str | None = Field(default=None, min_length=16, repr=False)
    peer_secret_file: str | None = None
    # reverse proxies (CIDRs) whose X-Forwarded-For / X-Forwarded-Proto are believed (D165)
    trusted_proxies: list[str] = Field(default_factory=list, max_length=100)
    # where a generated first-admin password goes (0600; D169; DATA_DIR/NODE/initial-admin-password)
    admin_password_out: str | None = None
    # the configured first-admin password must be changed at first login (Helm sets it)
    admin_must_change: bool = False
    etcd_ca: str | None = None
    etcd_cert: str | None = None
    etcd_key: str | None = None
    etcd_user: str | None = None
    etcd_password: str | None = Field(default=None, repr=False)
    etcd_password_file: str | None = None
    # project secrets (docs/security.md, "Secrets"): the AES key ring, one base64 key a line
    secrets_key_file: str | None = None
    # smtp://[user:pass@]host:port?from=ADDR[&starttls=1] (notifier)
    smtp_url: str | None = Field(default=None, repr=False)
    smtp_url_file: str | None = None
    # how people reach the web UI (https://cron.example.com): links in notifications (D256)
    public_url: PublicUrl = None
    # Execution logs (issue 3): store URL (s3://bucket/prefix, file:///path; default log_dir),
    # S3 endpoint/region (else AWS_*), spool folder and caps, seconds a pack stays open.
    log_store: str | None = None
    s3_endpoint: str | None = None
    s3_region: str | None = None
    # S3 credentials, handed to the S3 client explicitly (never left in the node's environment);
    # unset: boto3's other sources (~/.aws, instance or pod identity)
    s3_access_key_id: str | None = Field(default=None, repr=False)
    s3_access_key_id_file: str | None = None
    s3_secret_access_key: str | None = Field(default=None, repr=False)
    s3_secret_access_key_file: str | None = None
    s3_session_token: str | None = Field(default=None, repr=False)
    s3_session_token_file: str | None = None
    spool_dir: str | None = None
    log_run_cap: int = Field(default=64 * 1024 * 1024, ge=1024)
    spool_disk_cap: int = Field(default=4 * 1024 * 1024 * 1024, ge=1024 * 1024)
    log_segment_interval: float = Field(default=2.0, gt=0, le=300)
    log_pack_window: float = Field(default=1.0, ge=0, le=60)  # small S3 logs packed (D440)
    # a job's env besides PATH, HOME, LANG, LC_*, TZ, run variables: fixed ones, node's by name
    job_env: dict[str, Annotated[str, Field(max_length=4096)]] = Field(
        default_factory=dict, max_length=256
    )
    job_env_passthrough: list[str] = Field(default_factory=list, max_length=256)
    # Which users jobs run as (docs/security.md, D142): a node running as root runs a job as its
    # run_as user if listed here, else as run_as_default; root only with allow_root_jobs.
    run_as_users: list[Annotated[str, Field(pattern=USER_NAME_PATTERN)]] = Field(
        default_factory=list, max_length=1000
    )
    # "dynamic" (the default, D205): a uid of the run's own from run_uid_range; else a user name.
    run_as_default: str = Field(default="dynamic", pattern=USER_NAME_PATTERN)
    run_uid_range: tuple[int, int] = (61184, 65519)
    allow_root_jobs: bool = False
    # Bulk reads and quotas (D161, D162): keys per page of a bulk etcd read, the largest etcd
    # answer the client accepts, and the per-project quotas' cluster-wide defaults (a cluster
    # admin overrides them per project). Every node of a cluster should use the same values.
    etcd_page_keys: int = Field(default=PAGE_KEYS, ge=1, le=100_000)
    etcd_max_message: int = Field(default=MAX_MESSAGE, ge=2 * 1024 * 1024, le=2**31 - 1)
    quota_jobs: int = Field(default=DEFAULT_JOBS, ge=0, le=MAX_QUOTA)
    quota_workflows: int = Field(default=DEFAULT_WORKFLOWS, ge=0, le=MAX_QUOTA)
    quota_bytes: int = Field(default=DEFAULT_BYTES, ge=0, le=MAX_QUOTA)
    quota_run_history_bytes: int = Field(default=DEFAULT_RUN_HISTORY_BYTES, ge=0, le=MAX_QUOTA)
    # log reads served at once by this node (not follows): more answer 429 (D163)
    log_reads: int = Field(default=16, ge=1, le=10_000)
    # live log followers on one node, in all and per user: more answer 429 (D164)
    log_followers: int = Field(default=256, ge=1, le=100_000)
    log_followers_per_user: int = Field(default=16, ge=1, le=100_000)
    # HTTP: a connection must send a whole request head (line + headers) within this many
    # seconds; idle keep-alive connections close after the keep-alive timeout (slowloris)
    http_head_timeout: float = Field(default=10.0, gt=0, le=3600)
    http_keepalive_timeout: float = Field(default=75.0, gt=0, le=3600)
    http_body_timeout: float = Field(default=30.0, gt=0, le=3600)

    @property
    def quotas(self) -> Quotas:
        return Quotas(
            jobs=self.quota_jobs,
            workflows=self.quota_workflows,
            bytes=self.quota_bytes,
            run_history_bytes=self.quota_run_history_bytes,
        )

    @field_validator("etcd", mode="before")
    @classmethod
    def _split_etcd(cls, value: Any) -> Any:
        return _comma_list(value)

    @field_validator("properties", mode="before")
    @classmethod
    def _split_props(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [v for v in value.split(",") if v.strip()]
        if isinstance(value, list):
            out = {}
            for item in value:
                key, sep, val = str(item).partition("=")
                if not sep or not key.strip():
                    raise ValueError(f"property {item!r} must look like key=value")
                out[key.strip()] = val.strip()
            return out
        return value

    @field_validator("job_env", mode="before")
    @classmethod
    def _split_job_env(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [v for v in value.split(",") if v.strip()]
        if isinstance(value, list):
            out = {}
            for item in value:
                key, sep, val = str(item).partition("=")
                if not sep:
                    raise ValueError(f"job_env item {item!r} must look like NAME=VALUE")
                out[key.strip()] = val
            value = out
        if isinstance(value, dict):
            for key in value:
                if not isinstance(key, str) or not ENV_NAME.fullmatch(key):
                    raise ValueError(f"job_env name {key!r} must match {ENV_NAME.pattern}")
        return value

    @field_validator("run_uid_range", mode="before")
    @classmethod
    def _split_range(cls, value: Any) -> Any:
        if isinstance(value, str):  # "61184-65519"
            first, sep, last = value.partition("-")
            if not sep:
                raise ValueError("run_uid_range must be FIRST-LAST, e.g. 61184-65519")
            return (first.strip(), last.strip())
        return value

    @field_validator("run_as_users", mode="before")
    @classmethod
    def _split_users(cls, value: Any) -> Any:
        return _comma_list(value)

    @field_validator("job_env_passthrough", mode="before")
    @classmethod
    def _split_passthrough(cls, value: Any) -> Any:
        value = _comma_list(value)
        if isinstance(value, list):
            for name in value:
                if not isinstance(name, str) or not ENV_NAME.fullmatch(name):
                    raise ValueError(f"job_env_passthrough name {name!r} is not a variable name")
        return value

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _split_proxies(cls, value: Any) -> Any:
        value = _comma_list(value)
        if isinstance(value, list):
            parse_networks([str(v) for v in value])  # ValueError names the bad one
        return value

    @field_validator("log_store")
    @classmethod
    def _store_url(cls, value: str | None) -> str | None:
        if value is None or value.startswith(("file:///", "/")):
            return value
        if not re.fullmatch(r"s3://[a-z0-9][a-z0-9.\-]{1,62}(/[^\s]*)?", value):
            raise ValueError("must look like s3://bucket/prefix, file:///path or /path")
        return value

    @field_validator("listen", "advertise")
    @classmethod
    def _hostport(cls, value: str | None) -> str | None:
        if value is None:
            return None
        _, sep, port = value.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
            raise ValueError(f"{value!r} must look like HOST:PORT")
        return value

    @field_validator("run_uid_range")
    @classmethod
    def _check_range(cls, value: tuple[int, int]) -> tuple[int, int]:
        problem = check_range(*value)
        if problem is not None:
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _level_zero_on_loopback_only(self) -> NodeConfig:
        """Security level 0 checks nothing on ``/internal/v1`` (log reads of every project):
        allowed only when nobody but this machine can reach the node (#19 item 13, D158)."""
        if self.security_level == 0 and not is_loopback(self.listen_host):
            raise ValueError(
                f"security_level 0 leaves /internal/v1 open to anyone who can reach "
                f"{self.listen}; it is allowed only on a loopback listen address (127.0.0.1, "
                f"::1, localhost). Use level 1 (signed node-to-node calls)"
            )
        return self

    @property
    def listen_host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]") or "0.0.0.0"

    @property
    def listen_port(self) -> int:
        return int(self.listen.rpartition(":")[2])

    @property
    def advertise_address(self) -> str:
        if self.advertise:
            return self.advertise
        host = self.listen_host
        if host in ("0.0.0.0", "::", ""):
            host = socket.gethostname()
        return f"{host}:{self.listen_port}"

    @property
    def logs_path(self) -> Path:
        return Path(self.log_dir) if self.log_dir else Path(self.data_dir) / self.node_id / "logs"

    @property
    def admin_password_path(self) -> Path:
        if self.admin_password_out:
            return Path(self.admin_password_out)
        return Path(self.data_dir) / self.node_id / "initial-admin-password"

    @property
    def spool_path(self) -> Path:
        return (
            Path(self.spool_dir) if self.spool_dir else Path(self.data_dir) / self.node_id / "spool"
        )

    def log_settings(self) -> LogSettings:
        """What the log service (`logstore.service.build_logs`) is built from."""
        return LogSettings(
            spool_path=self.spool_path,
            run_cap=self.log_run_cap,
            disk_cap=self.spool_disk_cap,
            store_url=self.log_store,
            local_root=self.logs_path,
            s3_endpoint=self.s3_endpoint,
            s3_region=self.s3_region,
            segment_interval=self.log_segment_interval,
            pack_window=self.log_pack_window,
            s3_credentials=(
                S3Credentials(
                    self.s3_access_key_id, self.s3_secret_access_key, self.s3_session_token
                )
                if self.s3_access_key_id and self.s3_secret_access_key
                else None
            ),
        )

    @property
    def work_path(self) -> Path:
        return Path(self.work_dir) if self.work_dir else Path(self.data_dir) / self.node_id / "work"


def is_loopback(host: str) -> bool:
    """Only this machine can reach ``host`` (a name other than ``localhost`` is not trusted to
    resolve to loopback; the wildcard addresses are every interface)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
