"""Identity and access on one node: who is calling, may they, and what did they change.

One aiohttp middleware (``access_middleware``) handles every request:

1. ``permissions.requirement`` looks the method and path up in the rule table;
2. public paths pass; ``/internal/v1/…`` passes only with a valid peer signature (level 1);
3. anything else needs a user: a bearer token or the session cookie (plus the CSRF header for
   changes), an enabled user, and a grant that meets the rule (401 without, 403 without the role);
4. a change (POST/PUT/PATCH/DELETE) is audited with the etcd keys it touched, before and after.

``Access.on_session`` runs when the node has an etcd session: it creates the first admin once per
cluster and loads the peer secret.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web

from cluster import passwords
from cluster.audit import AuditLog, DenialMerger
from cluster.errors import (
    Forbidden,
    InvalidInput,
    NotConnected,
    PasswordChangeRequired,
    TooManyRequests,
    Unauthenticated,
    Unavailable,
)
from cluster.etcd import OBSERVER, Compare, Op
from cluster.identity import IdentityStore, TokenRecord, User
from cluster.permissions import WRITE, Requirement, allows, metrics_scope_allows, requirement
from nodes import metrics
from nodes.api import proxy, signing
from nodes.api.auditing import Auditing
from nodes.api.hashing import HashPool
from nodes.api.ratelimit import Attempt, LoginLimiter
from nodes.config_sources import read_secret

if TYPE_CHECKING:
    from cluster.etcd import Etcd
    from cluster.keys import Keys
    from cluster.store import Store
    from nodes.config import NodeConfig

log = structlog.get_logger(__name__)

COOKIE = "cronmesh_session"
CSRF_HEADER = "X-CSRF-Token"
Handler = Any


@dataclass(frozen=True, slots=True)
class Principal:
    user: User
    token: TokenRecord
    via: str  # "token" or "cookie"

    @property
    def name(self) -> str:
        return self.user.name


class Access(Auditing):
    """Who is calling and may they (the audit log's part: ``Auditing``)."""

    def __init__(self, config: NodeConfig, etcd: Etcd, keys: Keys, node_id: str) -> None:
        self.config = config
        self.etcd = etcd
        self.keys = keys
        self.node_id = node_id
        self.identity: IdentityStore | None = None
        self.connected: Callable[[], bool] = lambda: True  # the node sets it: a session held?
        self.audit: AuditLog | None = None
        self.limiter = LoginLimiter()
        self.hashing = HashPool()  # password hashing, apart from the default thread pool (D165)
        self.proxies = proxy.parse_networks(self.config.trusted_proxies)
        self.denials = DenialMerger()  # repeated refusals: one entry with a count (D168)
        self._flush_timer: asyncio.TimerHandle | None = None
        self._flushes: set[asyncio.Task[None]] = set()
        self.nonces = signing.NonceCache()
        self.rejections = signing.RejectionLog()  # one warning per reason a minute (D511)
        self.peer_secret: bytes | None = None
        configured = read_secret(
            self.config.peer_secret, self.config.peer_secret_file, "peer_secret"
        )
        if configured:
            self.peer_secret = configured.encode()
        self.metrics_token = read_secret(
            self.config.metrics_token, self.config.metrics_token_file, "metrics_token"
        )

    # -- session start -------------------------------------------------------------------------

    async def on_session(self, store: Store) -> None:
        self.identity = IdentityStore(store.etcd, store.keys, store.clock)
        self.audit = AuditLog(store.etcd, store.keys, store.ids, store.clock)
        await self._bootstrap_admin()
        await self.identity.index_tokens()  # once per cluster: tokens from before D514
        if self.config.security_level >= 1 and self.peer_secret is None:
            self.peer_secret = await self._shared_peer_secret()

    async def _bootstrap_admin(self) -> None:
        assert self.identity is not None
        keys, etcd = self.keys, self.etcd
        if await etcd.get(keys.bootstrapped()) is not None:
            return
        cfg = self.config
        password = read_secret(cfg.admin_password, cfg.admin_password_file, "admin_password")
        generated = password is None and cfg.admin_token is None
        out = cfg.admin_password_path
        if generated:
            password = secrets.token_urlsafe(18)
            # the password goes to a 0600 file, never to the log (D169); written before the
            # transaction, so a node that cannot write it does not create an admin nobody can use
            try:
                await asyncio.to_thread(write_private, out, password)
            except OSError as exc:
                log.error(
                    "cannot write the generated first-admin password; set "
                    "CRONMESH_ADMIN_PASSWORD(_FILE) or make the folder writable",
                    path=str(out),
                    error=str(exc),
                )
                return
        hashed = await self.hashing.run(passwords.hash_password, password) if password else None
        must_change = generated or cfg.admin_must_change
        user = await self.identity.bootstrap(cfg.admin_user, hashed, cfg.admin_token, must_change)
        if user is None:
            if generated:  # another node (or an earlier start) created the first admin
                await asyncio.to_thread(out.unlink, missing_ok=True)
            return
        if generated:
            log.warning(
                "first admin created with a generated password, in a file only this user may "
                "read; log in with it, choose a new one (required), then delete the file",
                user=cfg.admin_user,
                password_file=str(out),
            )
        else:
            log.info("first admin created from configuration", user=cfg.admin_user)

    async def _shared_peer_secret(self) -> bytes:
        """No secret configured: the cluster shares one in etcd, created by the first node."""
        key = self.keys.peer_secret()
        candidate = secrets.token_hex(32)
        etcd = self.etcd
        await etcd.txn([Compare.absent(key)], [Op.put(key, candidate)])
        kv = await etcd.get(key)
        if kv is None:
            raise Unavailable("the peer secret vanished from etcd")
        return bytes(kv.value)

    # -- peers ---------------------------------------------------------------------------------

    def sign(self, method: str, path_qs: str, body: bytes, *, to: str) -> dict[str, str]:
        """Headers for a call to node ``to`` (the receiver's id is signed: D158)."""
        if self.config.security_level == 0:
            return {}
        if self.peer_secret is None:
            raise Unavailable("this node has no peer secret yet")
        return signing.sign(
            self.peer_secret, method, path_qs, body, time.time(), self.node_id, to=to
        )

    async def check_peer(self, request: web.Request) -> None:
        if self.config.security_level == 0:
            return
        if self.peer_secret is None:
            raise Unavailable("this node has no peer secret yet")
        body = await request.read()
        reason = signing.verify(
            self.peer_secret,
            request.method,
            request.raw_path,
            body,
            request.headers,
            time.time(),
            self.nonces,
            me=self.node_id,
        )
        if reason is not None:
            # the label without spaces: naive readers of /metrics split a line on them
            metrics.child(metrics.PEER_REJECTED, reason.replace(" ", "_")).inc()
            unlogged = self.rejections.admit(reason, time.monotonic())
            if unlogged is not None:  # the first of its reason this minute (D511)
                log.warning(
                    "peer request rejected",
                    reason=reason,
                    path=request.path[:200],
                    address=request.remote,
                    unlogged=unlogged,
                )
            raise Forbidden(f"peer request rejected: {reason}")

    # -- users ---------------------------------------------------------------------------------

    def store(self) -> IdentityStore:
        if self.identity is None or not self.connected():
            raise NotConnected()
        return self.identity

    async def authenticate(self, request: web.Request) -> Principal:
        header = request.headers.get("Authorization", "")
        via = "token"
        if header:
            scheme, _, secret = header.partition(" ")
            if scheme.lower() != "bearer" or not secret.strip():
                raise Unauthenticated("Authorization must be 'Bearer <token>'")
            secret = secret.strip()
        else:
            secret = request.cookies.get(COOKIE, "")
            via = "cookie"
            if not secret:
                raise Unauthenticated(
                    "authentication required: log in (POST /api/v1/auth/login) or send "
                    "'Authorization: Bearer <token>'"
                )
        if not secret.isascii():  # tokens are ASCII; anything else cannot match (and must not 500)
            raise Unauthenticated("invalid, expired or revoked credentials")
        found = await self.store().resolve(secret)
        if found is None:
            raise Unauthenticated("invalid, expired or revoked credentials")
        record, user = found
        if via == "cookie" and request.method in WRITE:
            sent = request.headers.get(CSRF_HEADER, "")
            if (
                not record.csrf
                or not sent.isascii()
                or not secrets.compare_digest(sent, record.csrf)
            ):
                raise Forbidden(f"missing or wrong {CSRF_HEADER} header", field=CSRF_HEADER)
        return Principal(user, record, via)

    async def check_password(
        self, request: web.Request, username: str, password: str, stored: str | None, what: str
    ) -> bool:
        """Verify a password (a login, or a user's ``current_password``) under the login limits.

        The attempt takes its slot *before* the ~0.1 s hash runs, so concurrent guesses cannot all
        slip under the limit; the hash runs in the bounded hashing pool (429 ``busy`` when full,
        and then the attempt does not count). A failure is audited. Unknown users (``stored`` None)
        are verified against a dummy hash: same cost, always False.
        """
        address = client_address(request)
        attempt = self.limiter.reserve(username, address, time.monotonic())
        if not isinstance(attempt, Attempt):
            raise TooManyRequests(
                f"too many failed password attempts; retry in {int(attempt) + 1} s",
                retry_after=attempt,
            )
        try:
            good = await self.hashing.run(_verify, password, stored)
        except BaseException:
            self.limiter.release(attempt)
            raise
        if good:
            self.limiter.succeeded(attempt)
            return True
        log.info("password check failed", user=username, address=address, what=what)
        await self.record_denial(
            {
                "actor": username,
                "method": request.method,
                "path": request.path,
                "status": 401 if what == "login" else 400,
                "outcome": "login_failed" if what == "login" else "password_check_failed",
                "address": address,
            },
            source=f"address:{address}",  # the user name is the guesser's choice, the address not
        )
        return False

    def is_metrics_token(self, request: web.Request) -> bool:
        """Does the request carry the configured metrics token (no etcd read needed)?"""
        if not self.metrics_token:
            return False
        scheme, _, secret = request.headers.get("Authorization", "").partition(" ")
        return scheme.lower() == "bearer" and secrets.compare_digest(
            secret.strip().encode(errors="replace"), self.metrics_token.encode()
        )


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to a file only its owner may read (0600, also when it existed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(text + "\n")


def _verify(password: str, stored: str | None) -> bool:
    """In the hashing pool: check against the stored hash, or a dummy one (same cost, False)."""
    ok = passwords.verify_password(password, stored or passwords.dummy_hash())
    return ok and stored is not None


ACCESS: web.AppKey[Access] = web.AppKey("access")
PRINCIPAL: web.RequestKey[Principal] = web.RequestKey("principal", Principal)


def principal(request: web.Request) -> Principal:
    if PRINCIPAL not in request:
        raise Unauthenticated("authentication required")
    return request[PRINCIPAL]


def client_address(request: web.Request) -> str:
    """The client's address; behind a configured trusted proxy, from its X-Forwarded-For."""
    networks = request.app[ACCESS].proxies
    return proxy.client_address(request.remote, request.headers.get("X-Forwarded-For"), networks)


class UnsupportedMediaType(InvalidInput):
    code = "unsupported_media_type"
    status = 415


def check_login_origin(request: web.Request) -> None:
    """Login CSRF (D167): a login must be a JSON request from this site.

    A form or ``text/plain`` POST is what another site can make a browser send without a CORS
    preflight; ``application/json`` cannot be sent cross-site without one (and no CORS is served).
    Browsers also say where a request comes from: ``Sec-Fetch-Site: cross-site`` or an ``Origin``
    naming another host is refused. Clients that send neither header (the CLI, curl) pass.
    """
    ctype = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if ctype != "application/json":
        raise UnsupportedMediaType(
            "login needs Content-Type: application/json", field="Content-Type"
        )
    if request.headers.get("Sec-Fetch-Site", "").strip().lower() == "cross-site":
        raise Forbidden("cross-site login refused", field="Sec-Fetch-Site")
    origin = request.headers.get("Origin")
    if origin is not None and not same_origin(origin, request):
        raise Forbidden("login from another origin refused", field="Origin")


def same_origin(origin: str, request: web.Request) -> bool:
    """Does the ``Origin`` header name the host the request was sent to?"""
    scheme, sep, host = origin.strip().partition("://")
    if not sep or scheme.lower() not in ("http", "https") or not host:
        return False  # "null" (sandboxed frames, file:) and garbage
    sent_to = request.headers.get("X-Forwarded-Host") if is_trusted_proxy(request) else None
    return host.lower() == (sent_to or request.host or "").split(",")[0].strip().lower()


def is_trusted_proxy(request: web.Request) -> bool:
    return proxy.trusted(request.remote, request.app[ACCESS].proxies)


def is_tls(request: web.Request) -> bool:
    """Did the client use TLS: to this node, or to a trusted proxy (X-Forwarded-Proto)?"""
    told = proxy.forwarded_tls(
        request.remote, request.headers.get("X-Forwarded-Proto"), request.app[ACCESS].proxies
    )
    return request.secure if told is None else told


@web.middleware
async def access_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    access = request.app[ACCESS]
    need: Requirement = requirement(request.method, request.path)
    if need.access == "public":
        response: web.StreamResponse = await handler(request)
        return response
    if need.access == "peer":
        await access.check_peer(request)
        response = await handler(request)
        return response
    if need.access == "metrics" and access.is_metrics_token(request):
        response = await handler(request)
        return response
    # the router may split the path differently (an encoded "/" in a segment): its project and user
    # must be the ones this check is about
    for name, checked in (("project", need.project), ("user", need.user)):
        routed = request.match_info.get(name)
        if checked is not None and routed is not None and routed != checked:
            raise Forbidden(f"ambiguous {name} in the path", field=name)
    who = await access.authenticate(request)
    request[PRINCIPAL] = who
    entry: dict[str, Any] = {
        "actor": who.name,
        "via": who.via,
        "token": who.token.id,
        "method": request.method,
        "path": request.path,
        "project": need.project,
        "address": client_address(request),
    }
    if who.user.must_change_password and not _may_before_change(request, who.name):
        raise PasswordChangeRequired(
            f"user {who.name!r} must change the generated password first: "
            f"PUT /api/v1/users/{who.name}/password",
            field="password",
        )
    if who.token.scope == "metrics":
        # a metrics-only token: the read-outs and nothing else, whoever's it is (D166)
        if not metrics_scope_allows(need, request.path):
            raise Forbidden("this token may only read /metrics and /status", field="token")
        if need.access == "metrics":
            response = await handler(request)
            return response
    if not allows(need, who.name, who.user.roles):
        if request.method in WRITE:
            denied = {**entry, "status": 403, "outcome": "denied"}
            await access.record_denial(denied, source=f"actor:{who.name}")
        what = f"{need.role} on project {need.project!r}" if need.project else "cluster admin"
        if need.access == "self":
            what = f"to be {need.user!r} or a cluster admin"
        if need.access == "metrics":
            what = "viewer on '*' or a metrics token"
        raise Forbidden(f"user {who.name!r} needs {what} for {request.method} {request.path}")
    if request.method not in WRITE:
        response = await handler(request)
        return response
    changes = access.changes(entry)
    token = OBSERVER.set(changes)
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    except Exception as exc:
        status = int(getattr(exc, "status", 500))
        raise
    finally:
        OBSERVER.reset(token)
        changes.closed = True  # tasks the handler spawned keep the variable, not the recording
        if changes.items or status < 400:
            entry.update(
                status=status,
                outcome="ok" if status < 400 else "error",
                changes=changes.items,
                changes_dropped=changes.dropped,
            )
            await access.record(entry, changes)


def _may_before_change(request: web.Request, name: str) -> bool:
    """What an account that must change its password may do: that, who-am-I and log out."""
    allowed = {
        ("PUT", f"/api/v1/users/{name}/password"),
        ("GET", "/api/v1/auth/me"),
        ("POST", "/api/v1/auth/logout"),
    }
    return (request.method, request.path) in allowed


def whoami(who: Principal) -> dict[str, Any]:
    return {
        "user": who.user.public(),
        "via": who.via,
        "token": who.token.public(),
    }
