"""Set up the peers from nothing: Debian's ``redis-server`` (apt, with sudo when not root) and a
virtualenv of their own (``bench/.venv-peers``) from the pinned ``requirements.txt``.

The product's ``.venv`` is never touched, and the test suite never needs any of this.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCH = HERE.parent
PEERS_VENV = BENCH / ".venv-peers"
REQUIREMENTS = HERE / "requirements.txt"


def _sudo() -> list[str]:
    if os.geteuid() == 0:
        return []
    if shutil.which("sudo") is None:
        raise RuntimeError("bench.peers: installing redis-server needs root or sudo (apt-get)")
    return ["sudo"]


def redis_server() -> str:
    """The path of ``redis-server``; installs Debian's package when it is missing."""
    found = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
    )
    if found:
        return found
    print("bench.peers: installing Debian's redis-server (apt-get)", flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run([*_sudo(), "apt-get", "update", "-q"], check=True, env=env)
    subprocess.run(
        [*_sudo(), "apt-get", "install", "-y", "-q", "--no-install-recommends", "redis-server"],
        check=True,
        env=env,
    )
    # The package starts a system-wide redis on port 6379; the benchmark starts its own on a
    # free port and leaves the service as the package set it up.
    return shutil.which("redis-server") or "/usr/bin/redis-server"


def venv(path: Path, requirements: Path) -> Path:
    """``path/bin/python`` with ``requirements`` installed; reinstalls when the file changes."""
    python = path / "bin" / "python"
    stamp = path / ".requirements.sha1"
    want = hashlib.sha1(requirements.read_bytes()).hexdigest()
    if python.exists() and stamp.exists() and stamp.read_text().strip() == want:
        return python
    if not python.exists():
        print(f"bench.peers: creating {path}", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    print(f"bench.peers: installing {requirements.name} into {path}", flush=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "-r", str(requirements)], check=True
    )
    stamp.write_text(want + "\n")
    return python


def peers_python() -> Path:
    return venv(PEERS_VENV, REQUIREMENTS)
