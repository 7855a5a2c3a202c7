"""Where a node's configuration comes from: defaults < YAML file < environment (CRONMESH_*) <
command-line flags (`load_config`), secrets given as values or as files (`read_secret`), and the
etcd client's TLS files and user taken from it (`etcd_security`). The settings themselves are
`nodes.config.NodeConfig`."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from cluster.errors import InvalidInput
from cluster.etcd import Security
from cluster.models import parse_model
from nodes.config import NodeConfig

ENV = {
    "CRONMESH_NODE_ID": "node_id",
    "CRONMESH_ETCD": "etcd",
    "CRONMESH_LISTEN": "listen",
    "CRONMESH_ADVERTISE": "advertise",
    "CRONMESH_PREFIX": "prefix",
    "CRONMESH_LEASE_TTL": "lease_ttl",
    "CRONMESH_CAPACITY": "capacity",
    "CRONMESH_MAX_ARMED": "max_armed",
    "CRONMESH_WEIGHT_BUDGET": "weight_budget",
    "CRONMESH_OWNER": "owner",
    "CRONMESH_MACHINE_ID": "machine_id",
    "CRONMESH_HANDOFF_DELAY": "handoff_delay",
    "CRONMESH_MATERIALIZE_AHEAD": "materialize_ahead",
    "CRONMESH_PROPERTIES": "properties",
    "CRONMESH_DATA_DIR": "data_dir",
    "CRONMESH_LOG_DIR": "log_dir",
    "CRONMESH_WORK_DIR": "work_dir",
    "CRONMESH_DRAIN_TIMEOUT": "drain_timeout",
    "CRONMESH_NODE_RETENTION": "node_retention",
    "CRONMESH_LOG_FORMAT": "log_format",
    "CRONMESH_CGROUPS": "cgroups",
    "CRONMESH_ADMIN_USER": "admin_user",
    "CRONMESH_ADMIN_PASSWORD": "admin_password",
    "CRONMESH_ADMIN_PASSWORD_FILE": "admin_password_file",
    "CRONMESH_ADMIN_TOKEN": "admin_token",
    "CRONMESH_SESSION_TTL": "session_ttl",
    "CRONMESH_METRICS_TOKEN": "metrics_token",
    "CRONMESH_METRICS_TOKEN_FILE": "metrics_token_file",
    "CRONMESH_SECURITY_LEVEL": "security_level",
    "CRONMESH_PEER_SECRET": "peer_secret",
    "CRONMESH_PEER_SECRET_FILE": "peer_secret_file",
    "CRONMESH_TRUSTED_PROXIES": "trusted_proxies",
    "CRONMESH_ADMIN_PASSWORD_OUT": "admin_password_out",
    "CRONMESH_ADMIN_MUST_CHANGE": "admin_must_change",
    "CRONMESH_ETCD_CA": "etcd_ca",
    "CRONMESH_ETCD_CERT": "etcd_cert",
    "CRONMESH_ETCD_KEY": "etcd_key",
    "CRONMESH_ETCD_USER": "etcd_user",
    "CRONMESH_ETCD_PASSWORD": "etcd_password",
    "CRONMESH_ETCD_PASSWORD_FILE": "etcd_password_file",
    "CRONMESH_SECRETS_KEY_FILE": "secrets_key_file",
    "CRONMESH_SMTP_URL": "smtp_url",
    "CRONMESH_PUBLIC_URL": "public_url",
    "CRONMESH_LOG_STORE": "log_store",
    "CRONMESH_S3_ENDPOINT": "s3_endpoint",
    "CRONMESH_S3_REGION": "s3_region",
    "CRONMESH_SPOOL_DIR": "spool_dir",
    "CRONMESH_ADMIN_TOKEN_FILE": "admin_token_file",
    "CRONMESH_SMTP_URL_FILE": "smtp_url_file",
    "AWS_ACCESS_KEY_ID": "s3_access_key_id",
    "AWS_ACCESS_KEY_ID_FILE": "s3_access_key_id_file",
    "AWS_SECRET_ACCESS_KEY": "s3_secret_access_key",
    "AWS_SECRET_ACCESS_KEY_FILE": "s3_secret_access_key_file",
    "AWS_SESSION_TOKEN": "s3_session_token",
    "AWS_SESSION_TOKEN_FILE": "s3_session_token_file",
    "CRONMESH_JOB_ENV": "job_env",
    "CRONMESH_JOB_ENV_PASSTHROUGH": "job_env_passthrough",
    "CRONMESH_RUN_AS_USERS": "run_as_users",
    "CRONMESH_RUN_AS_DEFAULT": "run_as_default",
    "CRONMESH_RUN_UID_RANGE": "run_uid_range",
    "CRONMESH_ALLOW_ROOT_JOBS": "allow_root_jobs",
    "CRONMESH_ETCD_PAGE_KEYS": "etcd_page_keys",
    "CRONMESH_ETCD_MAX_MESSAGE": "etcd_max_message",
    "CRONMESH_QUOTA_JOBS": "quota_jobs",
    "CRONMESH_QUOTA_WORKFLOWS": "quota_workflows",
    "CRONMESH_QUOTA_BYTES": "quota_bytes",
    "CRONMESH_QUOTA_RUN_HISTORY_BYTES": "quota_run_history_bytes",
    "CRONMESH_LOG_READS": "log_reads",
    "CRONMESH_LOG_FOLLOWERS": "log_followers",
    "CRONMESH_LOG_FOLLOWERS_PER_USER": "log_followers_per_user",
    "CRONMESH_HTTP_HEAD_TIMEOUT": "http_head_timeout",
    "CRONMESH_HTTP_KEEPALIVE_TIMEOUT": "http_keepalive_timeout",
    "CRONMESH_HTTP_BODY_TIMEOUT": "http_body_timeout",
}

# Secrets a node may be given: each as a value or as a file (``<field>_file``, ``<VAR>_FILE``, as
# Docker and Kubernetes mount them). Files are read once, at start; the variables holding values
# are removed from the node's own environment afterwards (``nodes.executor.jobenv.scrub_secrets``).
SECRET_FIELDS = (
    "admin_password",
    "admin_token",
    "metrics_token",
    "peer_secret",
    "etcd_password",
    "smtp_url",
    "s3_access_key_id",
    "s3_secret_access_key",
    "s3_session_token",
)
SECRET_VARIABLES: tuple[str, ...] = (
    *(var for var, name in ENV.items() if name in SECRET_FIELDS),
    "CRONMESH_TOKEN",  # the CLI's, when a node is started from a shell that has one
    "CRONMESH_PASSWORD",
)


def read_secret(value: str | None, file: str | None, field: str) -> str | None:
    """A secret given inline or as a file (first line, stripped)."""
    if value:
        return value
    if not file:
        return None
    try:
        text = Path(file).read_text().strip()
    except OSError as exc:
        raise InvalidInput(f"cannot read {field} file {file}: {exc}", field=field) from exc
    if not text:
        raise InvalidInput(f"{field} file {file} is empty", field=field)
    return text.splitlines()[0].strip()


def load_config(
    flags: Mapping[str, Any], env: Mapping[str, str] | None = None, file: str | None = None
) -> NodeConfig:
    """Merge the three sources; ``flags`` holds only the flags the user actually gave."""
    env = os.environ if env is None else env
    data: dict[str, Any] = {}
    path = file or env.get("CRONMESH_CONFIG")
    if path:
        try:
            loaded = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise InvalidInput(f"cannot read config file {path}: {exc}", field="config") from exc
        if not isinstance(loaded, dict):
            raise InvalidInput(f"config file {path} must hold a mapping", field="config")
        data.update(loaded)
    for var, name in ENV.items():
        if env.get(var):
            data[name] = env[var]
    data.update({k: v for k, v in flags.items() if v is not None})
    for name in SECRET_FIELDS:  # a value wins over a file; the file is read once, here
        if not data.get(name) and data.get(f"{name}_file"):
            data[name] = read_secret(None, str(data[f"{name}_file"]), name)
    return parse_model(NodeConfig, data)


def etcd_security(config: NodeConfig) -> Security:
    """TLS files and etcd user of a node's etcd client (docs/security.md)."""
    password = read_secret(config.etcd_password, config.etcd_password_file, "etcd_password")
    if config.etcd_user and password is None:
        raise InvalidInput("etcd_user needs etcd_password or etcd_password_file", field="etcd_user")
    if bool(config.etcd_cert) != bool(config.etcd_key):
        raise InvalidInput("etcd_cert and etcd_key go together", field="etcd_cert")
    return Security(
        ca=config.etcd_ca,
        cert=config.etcd_cert,
        key=config.etcd_key,
        user=config.etcd_user,
        password=password,
    )
