"""Where a node keeps its files when no ``--data-dir`` is given (D254): never the current folder.

A node started by hand in a git checkout used to write ``.cronmesh/`` there (issue 22). The
default is now the machine's state folder for a node running as root, ``/var/lib/cronmesh`` (as
the container image sets), and the user's otherwise, ``$XDG_STATE_HOME/cronmesh`` (default
``~/.local/state/cronmesh``, the XDG base-directory rule for state that survives restarts).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path


def default_data_dir(env: Mapping[str, str] | None = None, uid: int | None = None) -> str:
    env = os.environ if env is None else env
    if (os.geteuid() if uid is None else uid) == 0:
        return "/var/lib/cronmesh"
    state = env.get("XDG_STATE_HOME", "")
    if not os.path.isabs(state):  # the spec: a relative value is invalid and ignored
        home = env.get("HOME") or str(Path.home())
        state = os.path.join(home, ".local", "state")
    return os.path.join(state, "cronmesh")
