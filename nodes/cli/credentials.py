"""Where the CLI's API token comes from: ``--token``, else ``CRONMESH_TOKEN``, else the credentials
file written by ``cronmesh login`` (``$CRONMESH_CREDENTIALS`` or
``~/.config/cronmesh/credentials.json``, mode 0600, one token per API URL)."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any


def credentials_path() -> Path:
    custom = os.environ.get("CRONMESH_CREDENTIALS")
    if custom:
        return Path(custom)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "cronmesh" / "credentials.json"


def load_credentials() -> dict[str, Any]:
    try:
        data = json.loads(credentials_path().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def save_credentials(data: dict[str, Any]) -> None:
    path = credentials_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def token_for(args: argparse.Namespace) -> str | None:
    explicit = getattr(args, "token", None) or os.environ.get("CRONMESH_TOKEN")
    if explicit:
        return str(explicit)
    entry = load_credentials().get(args.api.rstrip("/"))
    return str(entry["token"]) if isinstance(entry, dict) and entry.get("token") else None
