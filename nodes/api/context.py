"""What the HTTP API may use of its node: `ApiContext`. `nodes.daemon.node.Node` satisfies it
structurally, so no API module imports the daemon (the composition root imports the API)."""

from __future__ import annotations

from collections.abc import Callable, Sized
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from cluster.etcd import Etcd
    from cluster.keys import Keys
    from cluster.secret_store import SecretStore
    from cluster.session import Session
    from cluster.store import Store
    from logstore.service import Logs
    from nodes.api.access import Access
    from nodes.api.peer import PeerClient
    from nodes.config import NodeConfig
    from nodes.runtime.secretkeys import KeyFile


class WorkerView(Protocol):
    """The worker as the API sees it (status and queue depth)."""

    running: Sized
    candidates: Sized


class ContainmentView(Protocol):
    def status(self) -> dict[str, Any]: ...


class ApiContext(Protocol):
    """The node's parts the API reads. ``session``, ``store``, ``secrets`` and ``worker`` change
    with each etcd session (None between sessions)."""

    config: NodeConfig
    clock: Callable[[], datetime]
    etcd: Etcd
    keys: Keys
    logs: Logs
    peers: PeerClient
    access: Access
    secret_keys: KeyFile
    containment: ContainmentView
    started_at: datetime
    ready: bool
    leading: bool
    session: Session | None
    store: Store | None
    secrets: SecretStore | None
    worker: WorkerView | None

    @property
    def node_id(self) -> str: ...

    @property
    def shards_led(self) -> list[int]:
        """The scheduler shards this node leads now (D303)."""
        ...
