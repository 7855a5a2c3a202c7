"""Node-to-node HTTP calls: every call one node makes to another goes through ``PeerClient``.

Peers serve such calls under ``/internal/v1/…`` only; the public API never trusts a peer. At
security level 1 every call is signed here (``Access.sign``: HMAC over method, path and query, body
hash, timestamp, nonce, sender and receiver ids) and checked by ``access_middleware`` on the
receiving node.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import aiohttp
from yarl import URL

from cluster.errors import PeerRejected, Unavailable

if TYPE_CHECKING:
    from nodes.daemon import Node

INTERNAL_PREFIX = "/internal/v1"


class PeerClient:
    def __init__(self, node: Node) -> None:
        self.node = node
        self._http: aiohttp.ClientSession | None = None

    async def address(self, node_id: str) -> str:
        """The advertised ``host:port`` of a live node (from its lease-bound registry key)."""
        kv = await self.node.etcd.get(self.node.keys.node(node_id))
        if kv is None:
            raise Unavailable(f"node {node_id} is down")
        return str(json.loads(kv.value)["address"])

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession()
        return self._http

    @asynccontextmanager
    async def request(
        self,
        method: str,
        node_id: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: bytes = b"",
        client_timeout: aiohttp.ClientTimeout | None = None,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """Call ``path`` (below ``/internal/v1``) on node ``node_id``; yields the open response.

        Raises ``Unavailable`` when the node is down or cannot be reached, ``PeerRejected`` when
        it refuses this node's signature (401/403 from a peer is never the user's fault).
        """
        if not path.startswith(INTERNAL_PREFIX + "/"):
            raise ValueError(f"peer calls go to {INTERNAL_PREFIX}/…, not {path!r}")
        address = await self.address(node_id)
        path_qs = path + (f"?{urlencode(dict(params))}" if params else "")
        headers: dict[str, Any] = self.node.access.sign(method, path_qs, body, to=node_id)
        try:
            async with self._session().request(
                method,
                URL(f"http://{address}{path_qs}", encoded=True),
                data=body or None,
                headers=headers,
                timeout=client_timeout or aiohttp.ClientTimeout(total=30),
            ) as resp:
                if resp.status in (401, 403):
                    raise PeerRejected(
                        f"node {node_id} at {address} rejected this node's call"
                        f" ({resp.status}: {_reason(await resp.read())}); check that the nodes'"
                        " clocks agree and that they share the cluster's peer secret"
                    )
                yield resp
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise Unavailable(f"cannot reach node {node_id} at {address}: {exc!r}") from exc

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None


def _reason(body: bytes) -> str:
    """The message of a peer's JSON error, else the start of its body."""
    try:
        doc = json.loads(body)
        return str(doc.get("error", doc).get("message", doc))
    except (ValueError, AttributeError):
        return body[:200].decode("utf-8", "replace")
