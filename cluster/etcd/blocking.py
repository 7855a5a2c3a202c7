"""Lease refreshes over blocking gRPC channels (``BlockingLease``), for the session's thread."""

from __future__ import annotations

import time
from typing import Any

import grpc
from aetcd import rpc

from cluster.errors import AuthExpired, Unavailable
from cluster.etcd.members import MOVE_ON, Members, next_member
from cluster.etcd.security import token_expired


class BlockingLease:
    """Lease refreshes over blocking gRPC channels, for a thread of its own (``Session``): a
    node whose event loop is saturated still refreshes its lease on time.

    It starts on the asyncio client's current member and moves to the member that failed longest
    ago when one does not answer (``next_member``); the auth token is the asyncio client's.
    """

    def __init__(self, etcd: Members) -> None:
        self._etcd = etcd
        self._channels: dict[int, grpc.Channel] = {}
        self._failed_at = [0.0] * len(etcd.endpoints)
        self._index = etcd._current

    @property
    def endpoint(self) -> str:
        return self._etcd.endpoints[self._index]

    def _stub(self) -> Any:
        channel = self._channels.get(self._index)
        if channel is None:
            target, options, creds = self._etcd.channel_args(self._index)
            if creds is not None:
                channel = grpc.secure_channel(target, creds, options=options)
            else:
                channel = grpc.insecure_channel(target, options=options)
            self._channels[self._index] = channel
        return rpc.LeaseStub(channel)

    def keepalive(self, lease_id: int, deadline: float) -> int:
        """Refresh once; answers the new TTL, 0 when the lease no longer exists."""
        try:
            replies = self._stub().LeaseKeepAlive(
                iter([rpc.LeaseKeepAliveRequest(ID=lease_id)]),
                timeout=deadline,
                metadata=self._etcd._metadata(),
            )
            try:
                for reply in replies:
                    return int(reply.TTL)
            finally:
                replies.cancel()
            return 0
        except grpc.RpcError as exc:
            code, details = exc.code(), exc.details()
            if token_expired(code, details):
                raise AuthExpired(f"etcd lease keepalive: {details}") from exc
            if code in MOVE_ON and len(self._failed_at) > 1:
                self._failed_at[self._index] = time.monotonic()
                self._index = next_member(self._index, self._failed_at)
            raise Unavailable(f"etcd lease keepalive: {code.name}: {details}") from exc

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()
        self._channels.clear()
