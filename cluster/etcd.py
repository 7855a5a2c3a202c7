"""The only module that talks to etcd.

Built on the gRPC stubs that ``aetcd`` ships (``aetcd.rpc``), not on its high-level client: we need
range requests with ``limit``/``revision``/create-revision bounds, one watch stream per watcher that
reports the revision it has seen, and precise control of timeouts. Everything else in cronmesh uses
the small vocabulary below (``KV``, ``Compare``, ``Op``, ``Etcd``) and never imports ``aetcd``.

Errors: a call that fails because etcd is unreachable or too slow raises :class:`Unavailable`. A
transaction that may or may not have been applied raises :class:`OutcomeUnknown` (a subclass): the
caller must read the state back and decide, never retry blindly.

Members: the client keeps one gRPC channel per endpoint and sends every call to the *current*
one. A call that times out or finds its member unreachable makes the client move on to the next
member (the one that failed longest ago), so a member that is frozen with its connections open
(SIGSTOP, a hung disk) costs one short deadline, not the node's lease. Watches on the member left
behind end with :class:`Unavailable`; their owners resume from their last revision elsewhere.
"""

from __future__ import annotations

import asyncio
import contextvars
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import grpc
import structlog
from aetcd import rpc

from cluster.errors import CronmeshError, Unavailable

log = structlog.get_logger(__name__)

DEFAULT_TIMEOUT = 5.0


class ChangeObserver(Protocol):
    closed: bool  # set when its request ended (tasks it spawned inherit the variable)

    def add(self, key: str, before: bytes | None, after: bytes | None) -> None: ...

    def journal(self, ops: list[Any]) -> Any | None:
        """An op to run in the same transaction as ``ops`` (the audit entry's draft), or None."""


# While set (the audit log sets it per API request), every put and delete asks etcd for the
# previous value and reports (key, before, after) here.
OBSERVER: contextvars.ContextVar[ChangeObserver | None] = contextvars.ContextVar(
    "cronmesh_etcd_observer", default=None
)


def _observer() -> ChangeObserver | None:
    observer = OBSERVER.get()
    return None if observer is None or observer.closed else observer


def _observe_ops(ops: list[Any]) -> None:
    for op in ops:
        if op.HasField("request_put"):
            op.request_put.prev_kv = True
        elif op.HasField("request_delete_range"):
            op.request_delete_range.prev_kv = True
        elif op.HasField("request_txn"):
            _observe_ops(list(op.request_txn.success))
            _observe_ops(list(op.request_txn.failure))


def _report(observer: ChangeObserver, ops: list[Any], responses: list[Any]) -> None:
    for op, resp in zip(ops, responses, strict=False):
        if op.HasField("request_put"):
            put = resp.response_put
            prev = bytes(put.prev_kv.value) if put.HasField("prev_kv") else None
            observer.add(op.request_put.key.decode(), prev, bytes(op.request_put.value))
        elif op.HasField("request_delete_range"):
            for kv in resp.response_delete_range.prev_kvs:
                observer.add(kv.key.decode(), bytes(kv.value), None)
        elif op.HasField("request_txn"):
            inner, txn = op.request_txn, resp.response_txn
            ran = inner.success if txn.succeeded else inner.failure
            _report(observer, list(ran), list(txn.responses))


class OutcomeUnknown(Unavailable):
    """A write was sent but its reply was lost: it may have been applied. Read back, then decide."""

    code = "outcome_unknown"


class Compacted(CronmeshError):
    """A watch asked for a revision that etcd has already compacted away; re-read and re-watch."""

    code = "compacted"

    def __init__(self, revision: int) -> None:
        super().__init__(f"revision compacted below {revision}")
        self.revision = revision


@dataclass(frozen=True, slots=True)
class KV:
    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int

    @classmethod
    def from_pb(cls, kv: Any) -> KV:
        return cls(
            kv.key.decode(),
            bytes(kv.value),
            kv.create_revision,
            kv.mod_revision,
            kv.version,
            kv.lease,
        )


@dataclass(frozen=True, slots=True)
class Range:
    kvs: list[KV]
    revision: int  # the store revision the range was read at
    more: bool
    count: int


@dataclass(frozen=True, slots=True)
class Event:
    kind: Literal["put", "delete"]
    kv: KV  # for a delete: the key and the deletion's mod_revision; value is empty


@dataclass(frozen=True, slots=True)
class WatchBatch:
    events: list[Event]
    revision: int  # header revision: every change up to it has been delivered


@dataclass(frozen=True, slots=True)
class TxnResult:
    succeeded: bool
    revision: int
    responses: list[Any]  # raw ResponseOp messages, in the order of the ops that ran

    def range_kvs(self, index: int) -> list[KV]:
        return [KV.from_pb(kv) for kv in self.responses[index].response_range.kvs]


def prefix_end(prefix: str) -> bytes:
    """The range end that selects every key starting with ``prefix``."""
    raw = bytearray(prefix.encode())
    for i in reversed(range(len(raw))):
        if raw[i] < 0xFF:
            raw[i] += 1
            return bytes(raw[: i + 1])
    return b"\0"


class Compare:
    """Builders for transaction guards."""

    @staticmethod
    def _make(key: str, target: int, result: int, **value: Any) -> Any:
        return rpc.Compare(key=key.encode(), target=target, result=result, **value)

    @classmethod
    def created(cls, key: str, revision: int) -> Any:
        """The key exists and was created at ``revision`` (fencing on ownership keys)."""
        return cls._make(key, rpc.Compare.CREATE, rpc.Compare.EQUAL, create_revision=revision)

    @classmethod
    def modified(cls, key: str, revision: int) -> Any:
        """The key was last written at ``revision`` (0: the key does not exist)."""
        return cls._make(key, rpc.Compare.MOD, rpc.Compare.EQUAL, mod_revision=revision)

    @classmethod
    def absent(cls, key: str) -> Any:
        return cls._make(key, rpc.Compare.VERSION, rpc.Compare.EQUAL, version=0)

    @classmethod
    def exists(cls, key: str) -> Any:
        return cls._make(key, rpc.Compare.VERSION, rpc.Compare.GREATER, version=0)

    @classmethod
    def unchanged_since(cls, prefix: str, revision: int) -> Any:
        """No key under ``prefix`` was created or written after ``revision`` (deletions pass)."""
        cmp = cls._make(prefix, rpc.Compare.MOD, rpc.Compare.LESS, mod_revision=revision + 1)
        cmp.range_end = prefix_end(prefix)
        return cmp


class Op:
    """Builders for transaction operations."""

    @staticmethod
    def put(key: str, value: bytes | str, lease: int = 0) -> Any:
        data = value.encode() if isinstance(value, str) else value
        return rpc.RequestOp(request_put=rpc.PutRequest(key=key.encode(), value=data, lease=lease))

    @classmethod
    def put_if_absent(cls, key: str, value: bytes | str) -> Any:
        """A nested transaction that creates ``key`` unless it exists, leaving a present value be.

        For records other writes create on the way (a project on its first job), so the caller's
        own guards still decide the outer transaction and an existing document is never reset.
        """
        txn = rpc.TxnRequest(compare=[Compare.absent(key)], success=[cls.put(key, value)])
        return rpc.RequestOp(request_txn=txn)

    @staticmethod
    def delete(key: str, *, prefix: bool = False) -> Any:
        req = rpc.DeleteRangeRequest(key=key.encode())
        if prefix:
            req.range_end = prefix_end(key)
        return rpc.RequestOp(request_delete_range=req)

    @staticmethod
    def delete_range(start: str, end: str) -> Any:
        """Delete every key in ``[start, end)``."""
        return rpc.RequestOp(
            request_delete_range=rpc.DeleteRangeRequest(key=start.encode(), range_end=end.encode())
        )

    @staticmethod
    def get(key: str, *, prefix: bool = False, keys_only: bool = False) -> Any:
        req = rpc.RangeRequest(key=key.encode(), keys_only=keys_only)
        if prefix:
            req.range_end = prefix_end(key)
        return rpc.RequestOp(request_range=req)

    @staticmethod
    def count(prefix: str) -> Any:
        """How many keys start with ``prefix`` (``TxnResult.responses[i].response_range.count``)."""
        req = rpc.RangeRequest(key=prefix.encode(), range_end=prefix_end(prefix), count_only=True)
        return rpc.RequestOp(request_range=req)


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
_MOVE_ON = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}


def next_member(current: int, failed_at: Sequence[float]) -> int:
    """The member to use after ``current`` failed: the one whose last failure is oldest (never
    failed: 0), ties broken by endpoint order after ``current``. One member: itself."""
    n = len(failed_at)
    others = [(current + step) % n for step in range(1, n)]
    if not others:
        return current
    return min(others, key=lambda i: (failed_at[i], (i - current) % n))


@dataclass(eq=False)
class _Member:
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


def _unavailable(exc: grpc.aio.AioRpcError, what: str) -> Unavailable:
    return Unavailable(f"etcd {what}: {exc.code().name}: {exc.details()}")


def _too_large(exc: Unavailable) -> bool:
    """The answer was over the client's message cap (gRPC: "Received message larger than
    max")."""
    text = str(exc)
    return "RESOURCE_EXHAUSTED" in text and "larger than max" in text


_NOT_SENT = {grpc.StatusCode.UNAVAILABLE}
# gRPC also says "failed to connect to all addresses" when a connection it had opened closed
# before the server's first bytes arrived (its last error then says so): the request may have
# been written on it and applied (issue 25 found a claim applied under that message). Such a
# write's outcome is unknown, never "not sent".
_MAYBE_SENT = ("socket closed", "connection reset", "broken pipe", "goaway", "end of tcp stream")


def never_sent(code: grpc.StatusCode | None, details: str) -> bool:
    """Did this failed call certainly not reach etcd (so a write did not apply)?"""
    low = details.lower()
    return (
        code in _NOT_SENT
        and "failed to connect" in low
        and not any(word in low for word in _MAYBE_SENT)
    )


# Definitely not applied: the request itself is unacceptable (too large, duplicate key, too many
# operations). Retrying the same request can never succeed.
# RESOURCE_EXHAUSTED answers that pass: etcd is overloaded or out of space (an alarm an operator
# clears); nothing was applied, and the same request may succeed later.
_BUSY = ("too many requests", "database space exceeded")
_REJECTED = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.OUT_OF_RANGE,
}


@dataclass(frozen=True, slots=True)
class Security:
    """How to reach a secured etcd: TLS (server CA, optional client certificate) and/or a user.

    Paths are read at connect time. ``https://`` endpoints use TLS even without a CA (then the
    system roots verify the server).
    """

    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    user: str | None = None
    password: str | None = None

    def tls(self, endpoints: Sequence[str]) -> bool:
        return bool(self.ca or self.cert) or any(e.startswith("https://") for e in endpoints)

    def credentials(self) -> grpc.ChannelCredentials:
        def read(path: str | None) -> bytes | None:
            if path is None:
                return None
            try:
                with open(path, "rb") as f:
                    return f.read()
            except OSError as exc:
                raise Unavailable(f"cannot read etcd TLS file {path}: {exc}") from exc

        return grpc.ssl_channel_credentials(
            root_certificates=read(self.ca),
            private_key=read(self.key),
            certificate_chain=read(self.cert),
        )


_AUTHENTICATE = "/etcdserverpb.Auth/Authenticate"


def _token_expired(code: grpc.StatusCode | None, details: str | None) -> bool:
    return code == grpc.StatusCode.UNAUTHENTICATED or "invalid auth token" in (details or "")


class _AuthInterceptor(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """Adds the etcd auth token to every unary call; on an expired token (etcd restarted, TTL
    passed) authenticates again and retries once (etcd rejected the call: nothing was applied)."""

    def __init__(self, client: Etcd) -> None:
        self.client = client

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        if details.method in (_AUTHENTICATE, _AUTHENTICATE.encode()):
            return await continuation(details, request)
        if self.client._token is None:
            await self.client._authenticate()
        call = await continuation(self.client._with_token(details), request)
        code = await call.code()
        if not _token_expired(code, await call.details()):
            return call
        await self.client._authenticate(force=True)
        return await continuation(self.client._with_token(details), request)


class Etcd:
    """An etcd v3 client over one gRPC channel per endpoint, moving to another member when the
    current one stops answering (see the module's docstring)."""

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
        self._members: list[_Member | None] = [None] * len(self.endpoints)
        self._failed_at = [0.0] * len(self.endpoints)  # monotonic time of each one's last failure
        self._current = 0
        self.switches = 0  # how often the client moved to another member
        # members left behind, each closing once the calls in flight on it had their deadline
        self._retired: dict[_Member, asyncio.Task[None]] = {}

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

    def _open(self, index: int) -> _Member:
        endpoint = self.endpoints[index]
        interceptors = [_AuthInterceptor(self)] if self.security.user else None
        target, options, creds = self.channel_args(index)
        if creds is not None:
            channel = grpc.aio.secure_channel(
                target, creds, options=options, interceptors=interceptors
            )
        else:
            channel = grpc.aio.insecure_channel(target, options=options, interceptors=interceptors)
        return _Member(
            index,
            endpoint,
            channel,
            rpc.KVStub(channel),
            rpc.LeaseStub(channel),
            rpc.WatchStub(channel),
            rpc.MaintenanceStub(channel),
            rpc.AuthStub(channel),
        )

    def _stubs(self) -> _Member:
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

    def _failed(self, member: _Member, exc: grpc.aio.AioRpcError) -> None:
        """A call on ``member`` timed out or found it unreachable: move the client elsewhere.

        The member's channel is retired: its watch streams end (their owners resume on the new
        member) and it is closed once calls still in flight had their deadline.
        """
        if exc.code() not in _MOVE_ON or member.retired:
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

    async def _retire(self, member: _Member) -> None:
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
                raise _unavailable(exc, "authenticate") from exc
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

    async def __aenter__(self) -> Etcd:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _call(
        self, method: str, member: _Member, stub: Any, request: Any, deadline: float
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
        if exc is not None and _token_expired(exc.code(), exc.details()):
            await self._authenticate(force=True)
        elif self.security.user and self._token is None:
            await self._authenticate()

    # -- key/value -----------------------------------------------------------------------------

    async def get(self, key: str) -> KV | None:
        res = await self.range(key, prefix=False)
        return res.kvs[0] if res.kvs else None

    async def range(
        self,
        key: str,
        *,
        prefix: bool = True,
        end: str | None = None,
        limit: int = 0,
        revision: int = 0,
        descending: bool = False,
        sort: Literal["key", "create", "mod"] = "key",
        keys_only: bool = False,
        count_only: bool = False,
        max_create_revision: int = 0,
        serializable: bool = False,
    ) -> Range:
        """Read one key, a prefix, or ``[key, end)``; newest-first paging uses ``descending``."""
        m = self._stubs()
        req = rpc.RangeRequest(
            key=key.encode(),
            limit=limit,
            revision=revision,
            keys_only=keys_only,
            count_only=count_only,
            max_create_revision=max_create_revision,
            serializable=serializable,
        )
        if end is not None:
            req.range_end = end.encode()
        elif prefix:
            req.range_end = prefix_end(key)
        if descending or sort != "key":
            req.sort_order = rpc.RangeRequest.DESCEND if descending else rpc.RangeRequest.ASCEND
            req.sort_target = {
                "key": rpc.RangeRequest.KEY,
                "create": rpc.RangeRequest.CREATE,
                "mod": rpc.RangeRequest.MOD,
            }[sort]
        try:
            resp = await self._call("Range", m, m.kv.Range, req, self.timeout)
        except grpc.aio.AioRpcError as exc:
            raise _unavailable(exc, "range") from exc
        return Range(
            [KV.from_pb(item) for item in resp.kvs], resp.header.revision, resp.more, resp.count
        )

    async def range_pages(
        self,
        key: str,
        *,
        end: str | None = None,
        revision: int = 0,
        keys_only: bool = False,
        page_keys: int = 0,
    ) -> AsyncIterator[Range]:
        """A prefix (or ``[key, end)``) read in pages at one revision (the first page's, unless
        ``revision`` is given): every page's ``revision`` is that one (D161).

        A page holds at most ``page_keys`` keys (default: the client's ``page_keys``); a page
        whose answer is larger than ``max_message`` is read again with half as many keys, so
        any prefix is readable whatever its values weigh (a value is at most etcd's request
        limit, 1.5 MiB by default, well below the cap).
        """
        limit = page_keys or self._page_limits.get(key, self.page_keys)
        start = key
        stop = end if end is not None else prefix_end(key).decode("latin-1")
        while True:
            try:
                res = await self.range(
                    start, end=stop, limit=limit, revision=revision, keys_only=keys_only
                )
            except Unavailable as exc:
                if limit > 1 and _too_large(exc):
                    limit = max(1, limit // 2)
                    if len(self._page_limits) >= 256:  # bounded: forget what was learned
                        self._page_limits.clear()
                    self._page_limits[key] = limit  # the next read of this prefix starts here
                    continue
                raise
            revision = res.revision
            yield res
            if not res.more or not res.kvs:
                return
            start = res.kvs[-1].key + "\x00"

    async def range_all(
        self,
        key: str,
        *,
        end: str | None = None,
        revision: int = 0,
        keys_only: bool = False,
        page_keys: int = 0,
    ) -> Range:
        """Every key of a prefix at one revision, read in pages (``range_pages``): for bulk
        reads whose answer as one range could exceed the client's message cap."""
        kvs: list[KV] = []
        rev = revision
        async for page in self.range_pages(
            key, end=end, revision=revision, keys_only=keys_only, page_keys=page_keys
        ):
            kvs += page.kvs
            rev = page.revision
        return Range(kvs, rev, False, len(kvs))

    async def range_page(
        self, prefix: str, *, after: str | None = None, limit: int, keys_only: bool = False
    ) -> Range:
        """One page of a listing: at most ``limit`` keys of ``prefix`` after the key
        ``prefix + after`` (read in sub-pages that fit the message cap); ``more`` says whether
        keys follow (D161)."""
        start = prefix + (after + "\x00" if after is not None else "")
        stop = prefix_end(prefix).decode("latin-1")
        kvs: list[KV] = []
        rev, more = 0, False
        async for page in self.range_pages(
            start, end=stop, keys_only=keys_only, page_keys=min(limit + 1, self.page_keys)
        ):
            kvs += page.kvs
            rev, more = page.revision, page.more
            if len(kvs) > limit:
                break
        if len(kvs) > limit:
            kvs, more = kvs[:limit], True
        return Range(kvs, rev, more, len(kvs))

    async def put(self, key: str, value: bytes | str, *, lease: int = 0) -> int:
        m = self._stubs()
        data = value.encode() if isinstance(value, str) else value
        observer = _observer()
        if observer is not None:  # observed writes go as transactions, to carry the journal
            return (await self.txn([], [Op.put(key, data, lease)])).revision
        try:
            req = rpc.PutRequest(
                key=key.encode(), value=data, lease=lease, prev_kv=observer is not None
            )
            resp = await self._call("Put", m, m.kv.Put, req, self.timeout)
        except grpc.aio.AioRpcError as exc:
            raise _unavailable(exc, "put") from exc
        if observer is not None:
            prev = bytes(resp.prev_kv.value) if resp.HasField("prev_kv") else None
            observer.add(key, prev, data)
        return int(resp.header.revision)

    async def delete(self, key: str, *, prefix: bool = False) -> int:
        m = self._stubs()
        observer = _observer()
        if observer is not None:
            res = await self.txn([], [Op.delete(key, prefix=prefix)])
            return int(res.responses[0].response_delete_range.deleted)
        req = rpc.DeleteRangeRequest(key=key.encode(), prev_kv=observer is not None)
        if prefix:
            req.range_end = prefix_end(key)
        try:
            resp = await self._call("DeleteRange", m, m.kv.DeleteRange, req, self.timeout)
        except grpc.aio.AioRpcError as exc:
            raise _unavailable(exc, "delete") from exc
        if observer is not None:
            for item in resp.prev_kvs:
                observer.add(item.key.decode(), bytes(item.value), None)
        return int(resp.deleted)

    async def txn(
        self, compare: Iterable[Any], success: Iterable[Any], failure: Iterable[Any] = ()
    ) -> TxnResult:
        """Run one transaction. Raises OutcomeUnknown when the reply may have been lost."""
        req = rpc.TxnRequest(compare=list(compare), success=list(success), failure=list(failure))
        return await self.txn_request(req)

    async def txn_request(self, req: Any) -> TxnResult:
        """:meth:`txn` of a prepared ``rpc.TxnRequest`` (the group commit builds its own)."""
        m = self._stubs()
        observer = _observer()
        ran_ops = {True: list(req.success), False: list(req.failure)}  # without the journal
        if observer is not None:
            _observe_ops(ran_ops[True])
            _observe_ops(ran_ops[False])
            for branch in (req.success, req.failure):
                entry = observer.journal(list(branch))
                if entry is not None:
                    branch.append(entry)
        try:
            resp = await self._call("Txn", m, m.kv.Txn, req, self.timeout)
        except grpc.aio.AioRpcError as exc:
            details = exc.details() or ""
            if never_sent(exc.code(), details):
                raise _unavailable(exc, "txn") from exc  # never left this process
            if "lease not found" in details:
                raise LeaseGone(f"etcd txn rejected: {details}") from exc
            if any(word in details for word in _BUSY):
                # refused for now, not for ever: nothing applied, and the same request can
                # succeed later (the caller retries as after any unavailability)
                raise _unavailable(exc, "txn") from exc
            if exc.code() in _REJECTED:
                raise Rejected(f"etcd rejected the transaction: {details}") from exc
            raise OutcomeUnknown(f"etcd txn: {exc.code().name}: {details}") from exc
        if observer is not None:
            _report(observer, ran_ops[bool(resp.succeeded)], list(resp.responses))
        return TxnResult(bool(resp.succeeded), int(resp.header.revision), list(resp.responses))

    # -- leases --------------------------------------------------------------------------------

    async def grant(self, ttl: int) -> int:
        m = self._stubs()
        try:
            req = rpc.LeaseGrantRequest(TTL=ttl)
            resp = await self._call("LeaseGrant", m, m.lease.LeaseGrant, req, self.timeout)
        except grpc.aio.AioRpcError as exc:
            raise _unavailable(exc, "lease grant") from exc
        if resp.error:
            raise Unavailable(f"etcd lease grant: {resp.error}")
        return int(resp.ID)

    async def keepalive(self, lease_id: int, *, deadline: float | None = None) -> int:
        """Refresh a lease once; answers the new TTL, 0 when the lease no longer exists.

        ``deadline`` should be a fraction of the TTL: a member that does not answer in time is
        left for another one while the lease still has time to be refreshed there.
        """
        m = self._stubs()
        await self._stream_auth()
        call = m.lease.LeaseKeepAlive(timeout=deadline or self.timeout, metadata=self._metadata())
        try:
            await call.write(rpc.LeaseKeepAliveRequest(ID=lease_id))
            await call.done_writing()
            async for reply in call:
                return int(reply.TTL)
        except grpc.aio.AioRpcError as exc:
            self._failed(m, exc)
            await self._stream_auth(exc)
            raise _unavailable(exc, "lease keepalive") from exc
        finally:
            call.cancel()
        return 0

    async def time_to_live(self, lease_id: int) -> tuple[int, int]:
        """(remaining TTL, granted TTL) of a lease in seconds; remaining is -1 when it is gone."""
        m = self._stubs()
        try:
            req = rpc.LeaseTimeToLiveRequest(ID=lease_id)
            resp = await self._call(
                "LeaseTimeToLive", m, m.lease.LeaseTimeToLive, req, self.timeout
            )
        except grpc.aio.AioRpcError as exc:
            raise _unavailable(exc, "lease ttl") from exc
        return int(resp.TTL), int(resp.grantedTTL)

    async def revoke(self, lease_id: int, *, deadline: float | None = None) -> None:
        m = self._stubs()
        try:
            req = rpc.LeaseRevokeRequest(ID=lease_id)
            await self._call("LeaseRevoke", m, m.lease.LeaseRevoke, req, deadline or self.timeout)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return
            raise _unavailable(exc, "lease revoke") from exc

    # -- watches -------------------------------------------------------------------------------

    async def watch(
        self,
        key: str,
        *,
        start_revision: int,
        prefix: bool = True,
        progress_notify: bool = True,
    ) -> AsyncIterator[WatchBatch]:
        """Stream changes from ``start_revision`` on, in order; ends only by error or cancel.

        Raises :class:`Compacted` when ``start_revision`` is gone, :class:`Unavailable` when the
        stream breaks; the caller re-reads and re-watches from the last revision it saw.
        """
        m = self._stubs()
        create = rpc.WatchCreateRequest(
            key=key.encode(), start_revision=start_revision, progress_notify=progress_notify
        )
        if prefix:
            create.range_end = prefix_end(key)
        await self._stream_auth()
        call = m.watch.Watch(metadata=self._metadata())
        m.streams.add(call)
        try:
            await call.write(rpc.WatchRequest(create_request=create))
            async for resp in call:
                if resp.compact_revision:
                    raise Compacted(int(resp.compact_revision))
                if resp.canceled:
                    raise Unavailable(f"etcd watch canceled: {resp.cancel_reason}")
                if resp.created and not resp.events:
                    continue
                events = [
                    Event("delete" if ev.type == rpc.Event.DELETE else "put", KV.from_pb(ev.kv))
                    for ev in resp.events
                ]
                yield WatchBatch(events, int(resp.header.revision))
            raise Unavailable("etcd watch stream ended")
        except grpc.aio.AioRpcError as exc:
            self._failed(m, exc)
            await self._stream_auth(exc)
            raise _unavailable(exc, "watch") from exc
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if m.retired and (task is None or not task.cancelling()):
                # the client left this member (``_retire`` cancelled the stream), not our caller
                raise Unavailable(f"etcd watch moved off member {m.endpoint}") from None
            raise
        finally:
            m.streams.discard(call)
            call.cancel()

    async def status(self) -> dict[str, Any]:
        m = self._stubs()
        try:
            resp = await self._call("Status", m, m.maint.Status, rpc.StatusRequest(), self.timeout)
        except grpc.aio.AioRpcError as exc:
            raise _unavailable(exc, "status") from exc
        return {
            "version": resp.version,
            "db_size": int(resp.dbSize),
            "leader": int(resp.leader),
            "raft_term": int(resp.raftTerm),
            "revision": int(resp.header.revision),
        }

    async def wait_ready(self, deadline: float) -> None:
        """Poll until etcd answers (with backoff) or raise Unavailable at loop time ``deadline``."""
        loop = asyncio.get_running_loop()
        delay = 0.05
        while True:
            try:
                await self.status()
                return
            except Unavailable:
                if loop.time() + delay > deadline:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)


class LeaseGone(Unavailable):
    """A write bound to a lease was rejected because the lease no longer exists."""

    code = "lease_gone"


class Rejected(CronmeshError):
    """etcd refused a request that can never succeed as it is (too large, malformed)."""

    code = "rejected"
    status = 422


class AuthExpired(Unavailable):
    """The blocking lease client's token was refused: the asyncio client must renew it."""


class BlockingLease:
    """Lease refreshes over blocking gRPC channels, for a thread of its own (``Session``): a
    node whose event loop is saturated still refreshes its lease on time.

    It starts on the asyncio client's current member and moves to the member that failed longest
    ago when one does not answer (``next_member``); the auth token is the asyncio client's.
    """

    def __init__(self, etcd: Etcd) -> None:
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
            if _token_expired(code, details):
                raise AuthExpired(f"etcd lease keepalive: {details}") from exc
            if code in _MOVE_ON and len(self._failed_at) > 1:
                self._failed_at[self._index] = time.monotonic()
                self._index = next_member(self._index, self._failed_at)
            raise Unavailable(f"etcd lease keepalive: {code.name}: {details}") from exc

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()
        self._channels.clear()
