"""The client's connections: one gRPC channel per etcd member, the move to another member when the
current one stops answering, authentication, and the timing of each call (``Members``, the base
of :class:`~cluster.etcd.client.Etcd`)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import structlog
from aetcd import rpc

from cluster.errors import Unavailable
from cluster.etcd.security import Security, token_expired

log = structlog.get_logger(__name__)

DEFAULT_TIMEOUT = 5.0


def _is_ip(host: str) -> bool:
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
    except OSError:
        return False
    return True


def _target(endpoints: Sequence[str]) -> str:
    """A gRPC target over the endpoints' addresses (each endpoint resolved to its first)."""
    addrs: list[str] = []
    family = "ipv4"
    for endpoint in endpoints:
        hostport = endpoint.split("://", 1)[-1].rstrip("/")
        host, _, port = hostport.rpartition(":")
        if not host:
            host, port = hostport, "2379"
        host = host.strip("[]")
        try:
            infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
        except (socket.gaierror, ValueError) as exc:
            raise Unavailable(f"cannot resolve etcd endpoint {endpoint!r}: {exc}") from exc
        info = infos[0]
        if info[0] == socket.AF_INET6:
            family = "ipv6"
            addrs.append(f"[{info[4][0]}]:{port}")
        else:
            addrs.append(f"{info[4][0]}:{port}")
    return f"{family}:{','.join(addrs)}"


_CHANNEL_OPTIONS = [
    # etcd's server enforces >= 5 s between pings and no pings without active calls
    # (GOAWAY "too_many_pings" otherwise); nodes always hold watch streams, so pinging only with
    # calls in flight still detects a dead connection.
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 0),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1_000),
]
# The largest answer the client accepts (gRPC's cap on one received message). One range answer
# must fit: ``range_all`` reads a prefix in pages that do (D161).
MAX_MESSAGE = 64 * 1024 * 1024
# Keys per page of ``range_all``: a page halves while its answer is over ``max_message``.
PAGE_KEYS = 500


# A call ending with these says nothing good about the member it went to: try another one next.
MOVE_ON = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}


def next_member(current: int, failed_at: Sequence[float]) -> int:
    """The member to use after ``current`` failed: the one whose last failure is oldest (never
    failed: 0), ties broken by endpoint order after ``current``. One member: itself."""
    n = len(failed_at)
    others = [(current + step) % n for step in range(1, n)]
    if not others:
        return current
    return min(others, key=lambda i: (failed_at[i], (i - current) % n))


@dataclass(eq=False)
class Member:
    """One endpoint's channel and stubs; ``retired`` once the client moved away from it."""

    index: int
    endpoint: str
    channel: grpc.aio.Channel
    kv: Any
    lease: Any
    watch: Any
    maint: Any
    auth: Any
    retired: bool = False
    streams: set[Any] = field(default_factory=set)  # open watch calls, ended when it retires


def unavailable(exc: grpc.aio.AioRpcError, what: str) -> Unavailable:
    return Unavailable(f"etcd {what}: {exc.code().name}: {exc.details()}")


_AUTHENTICATE = "/etcdserverpb.Auth/Authenticate"


class _AuthInterceptor(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """Adds the etcd auth token to every unary call; on an expired token (etcd restarted, TTL
    passed) authenticates again and retries once (etcd rejected the call: nothing was applied)."""

    def __init__(self, client: Members) -> None:
        self.client = client

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        if details.method in (_AUTHENTICATE, _AUTHENTICATE.encode()):
            return await continuation(details, request)
        if self.client._token is None:
            await self.client._authenticate()
        call = await continuation(self.client._with_token(details), request)
        code = await call.code()
        if not token_expired(code, await call.details()):
            return call
        await self.client._authenticate(force=True)
        return await continuation(self.client._with_token(details), request)


class Members:
    """The members an :class:`~cluster.etcd.client.Etcd` talks to: one channel per endpoint, the
    move to another member when the current one stops answering, auth, timed calls."""

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        timeout: float = DEFAULT_TIMEOUT,
        security: Security | None = None,
        observer: Callable[[str, float, str], None] | None = None,
        max_message: int = MAX_MESSAGE,
        page_keys: int = PAGE_KEYS,
    ) -> None:
        if not endpoints:
            raise ValueError("at least one etcd endpoint is required")
        self.endpoints = list(endpoints)
        self.timeout = timeout
        self.max_message = max_message
        self.page_keys = max(1, page_keys)
        self._page_limits: dict[str, int] = {}  # prefix -> a page size that fitted
        self.security = security or Security()
        self._token: str | None = None
        self._auth_lock = asyncio.Lock()
        # Told (method, seconds, outcome) after each unary call: "ok" or the gRPC status name.
        self.observer = observer
        self._connected = False
        self._members: list[Member | None] = [None] * len(self.endpoints)
        self._failed_at = [0.0] * len(self.endpoints)  # monotonic time of each one's last failure
        self._current = 0
        self.switches = 0  # how often the client moved to another member
        # watch events received, by the watched key's family (``watch_family``, D348)
        self.watch_events: dict[str, int] = {}
        # and the responses that carried them (each costs a gRPC message read and a loop wake-up)
        self.watch_responses: dict[str, int] = {}
        # members left behind, each closing once the calls in flight on it had their deadline
        self._retired: dict[Member, asyncio.Task[None]] = {}

    @property
    def current_endpoint(self) -> str:
        return self.endpoints[self._current]

    async def connect(self) -> None:
        if self._connected:
            return
        self._connected = True
        self._token = None
        self._stubs()  # resolve and open the first member now: bad endpoints fail early

    def channel_args(self, index: int) -> tuple[str, list[tuple[str, Any]], Any]:
        """(target, options, TLS credentials or None) of the channel to member ``index``."""
        sec = self.security
        endpoint = self.endpoints[index]
        options: list[tuple[str, Any]] = [
            *_CHANNEL_OPTIONS,
            ("grpc.max_receive_message_length", self.max_message),
        ]
        if not sec.tls(self.endpoints):
            return _target([endpoint]), options, None
        host = endpoint.split("://", 1)[-1].rpartition(":")[0].strip("[]")
        if host and not _is_ip(host):  # the target is resolved to addresses: check the name
            options.append(("grpc.ssl_target_name_override", host))
        return _target([endpoint]), options, sec.credentials()

    def _open(self, index: int) -> Member:
        endpoint = self.endpoints[index]
        interceptors = [_AuthInterceptor(self)] if self.security.user else None
        target, options, creds = self.channel_args(index)
        if creds is not None:
            channel = grpc.aio.secure_channel(
                target, creds, options=options, interceptors=interceptors
            )
        else:
            channel = grpc.aio.insecure_channel(target, options=options, interceptors=interceptors)
        return Member(
            index,
            endpoint,
            channel,
            rpc.KVStub(channel),
            rpc.LeaseStub(channel),
            rpc.WatchStub(channel),
            rpc.MaintenanceStub(channel),
            rpc.AuthStub(channel),
        )

    def _stubs(self) -> Member:
        """The current member, its channel opened on first use."""
        if not self._connected:
            raise Unavailable("etcd client is not connected")
        for _ in range(len(self.endpoints)):
            member = self._members[self._current]
            if member is not None:
                return member
            try:
                member = self._open(self._current)
            except Unavailable as exc:  # the name does not resolve (now): try the next one
                if len(self.endpoints) == 1:
                    raise
                log.warning(
                    "etcd endpoint unusable", endpoint=self.current_endpoint, error=str(exc)
                )
                self._failed_at[self._current] = time.monotonic()
                self._current = next_member(self._current, self._failed_at)
                continue
            self._members[self._current] = member
            return member
        raise Unavailable(f"no usable etcd endpoint among {self.endpoints}")

    def _failed(self, member: Member, exc: grpc.aio.AioRpcError) -> None:
        """A call on ``member`` timed out or found it unreachable: move the client elsewhere.

        The member's channel is retired: its watch streams end (their owners resume on the new
        member) and it is closed once calls still in flight had their deadline.
        """
        if exc.code() not in MOVE_ON or member.retired:
            return
        if len(self.endpoints) == 1 and exc.code() is grpc.StatusCode.DEADLINE_EXCEEDED:
            # A slow answer from the only member: there is nowhere to move to, and retiring the
            # channel would end every watch stream, whose owners then re-read everything, which
            # adds load exactly when the member (or this process) is already overloaded.
            self._failed_at[member.index] = time.monotonic()
            return
        self._failed_at[member.index] = time.monotonic()
        member.retired = True
        if self._members[member.index] is member:
            self._members[member.index] = None
        if self._current == member.index:
            self._current = next_member(member.index, self._failed_at)
            self.switches += 1
            if len(self.endpoints) > 1:
                log.warning(
                    "etcd member not answering; switching",
                    left=member.endpoint,
                    now=self.current_endpoint,
                    error=exc.code().name,
                )
        for call in list(member.streams):
            call.cancel()
        self._retired[member] = asyncio.get_running_loop().create_task(self._retire(member))

    async def _retire(self, member: Member) -> None:
        try:
            await member.channel.close(grace=self.timeout)
        finally:
            self._retired.pop(member, None)

    async def _authenticate(self, *, force: bool = False) -> str | None:
        """Get (or renew) the etcd auth token of ``security.user``; None without a user."""
        sec = self.security
        if not sec.user:
            return None
        async with self._auth_lock:
            if self._token is not None and not force:
                return self._token
            member = self._stubs()
            try:
                resp = await member.auth.Authenticate(
                    rpc.AuthenticateRequest(name=sec.user, password=sec.password or ""),
                    timeout=self.timeout,
                )
            except grpc.aio.AioRpcError as exc:
                self._failed(member, exc)
                raise unavailable(exc, "authenticate") from exc
            self._token = str(resp.token)
            return self._token

    def _metadata(self) -> tuple[tuple[str, str], ...] | None:
        return (("token", self._token),) if self._token else None

    def _with_token(self, details: Any) -> Any:
        if not self._token:
            return details
        metadata = grpc.aio.Metadata(*(details.metadata or ()))
        metadata["token"] = self._token
        return details._replace(metadata=metadata)

    async def close(self) -> None:
        self._connected = False
        members, self._members = self._members, [None] * len(self.endpoints)
        for member in members:
            if member is not None:
                member.retired = True
                await member.channel.close(grace=None)
        for member in list(self._retired):
            await member.channel.close(grace=None)

    async def _call(
        self, method: str, member: Member, stub: Any, request: Any, deadline: float
    ) -> Any:
        """One unary RPC on ``member``, timed for the observer when there is one (metrics); a
        timeout or an unreachable member moves the client to another one."""
        start = time.perf_counter()
        outcome = "ok"
        try:
            return await stub(request, timeout=deadline)
        except grpc.aio.AioRpcError as exc:
            outcome = exc.code().name
            self._failed(member, exc)
            raise
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        except BaseException:
            outcome = "error"
            raise
        finally:
            if self.observer is not None:
                self.observer(method, time.perf_counter() - start, outcome)

    async def _stream_auth(self, exc: grpc.aio.AioRpcError | None = None) -> None:
        """Streams carry the token as metadata: get one first, renew it after it expired."""
        if exc is not None and token_expired(exc.code(), exc.details()):
            await self._authenticate(force=True)
        elif self.security.user and self._token is None:
            await self._authenticate()
