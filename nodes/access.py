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
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web

from cluster import passwords
from cluster.audit import AuditLog, Changes
from cluster.errors import Forbidden, Unauthenticated, Unavailable
from cluster.etcd import OBSERVER, Compare, Op
from cluster.identity import IdentityStore, TokenRecord, User
from cluster.permissions import WRITE, Requirement, allows, requirement
from nodes import signing
from nodes.config import read_secret
from nodes.ratelimit import LoginLimiter

if TYPE_CHECKING:
    from cluster.store import Store
    from nodes.daemon import Node

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


class Access:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.config = node.config
        self.identity: IdentityStore | None = None
        self.audit: AuditLog | None = None
        self.limiter = LoginLimiter()
        self.nonces = signing.NonceCache()
        self.peer_secret: bytes | None = None
        configured = read_secret(
            self.config.peer_secret, self.config.peer_secret_file, "peer_secret"
        )
        if configured:
            self.peer_secret = configured.encode()

    # -- session start -------------------------------------------------------------------------

    async def on_session(self, store: Store) -> None:
        self.identity = IdentityStore(store.etcd, store.keys, store.clock)
        self.audit = AuditLog(store.etcd, store.keys, store.ids, store.clock)
        await self._bootstrap_admin()
        if self.config.security_level >= 1 and self.peer_secret is None:
            self.peer_secret = await self._shared_peer_secret()

    async def _bootstrap_admin(self) -> None:
        assert self.identity is not None
        keys, etcd = self.node.keys, self.node.etcd
        if await etcd.get(keys.bootstrapped()) is not None:
            return
        cfg = self.config
        password = read_secret(cfg.admin_password, cfg.admin_password_file, "admin_password")
        generated = password is None and cfg.admin_token is None
        if generated:
            password = secrets.token_urlsafe(18)
        hashed = await asyncio.to_thread(passwords.hash_password, password) if password else None
        user = await self.identity.bootstrap(cfg.admin_user, hashed, cfg.admin_token)
        if user is None:
            return  # another node (or an earlier start) created the first admin
        if generated:
            # printed once, by the one node that won the create-if-absent transaction
            log.warning(
                "first admin created with a generated password; change it after logging in",
                user=cfg.admin_user,
                password=password,
            )
        else:
            log.info("first admin created from configuration", user=cfg.admin_user)

    async def _shared_peer_secret(self) -> bytes:
        """No secret configured: the cluster shares one in etcd, created by the first node."""
        key = self.node.keys.peer_secret()
        candidate = secrets.token_hex(32)
        etcd = self.node.etcd
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
            self.peer_secret, method, path_qs, body, time.time(), self.node.node_id, to=to
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
            me=self.node.node_id,
        )
        if reason is not None:
            log.warning("peer request rejected", reason=reason, path=request.path)
            raise Forbidden(f"peer request rejected: {reason}")

    # -- users ---------------------------------------------------------------------------------

    def store(self) -> IdentityStore:
        if self.identity is None:
            raise Unavailable("this node is not connected to etcd")
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
        found = await self.store().resolve(secret)
        if found is None:
            raise Unauthenticated("invalid, expired or revoked credentials")
        record, user = found
        if via == "cookie" and request.method in WRITE:
            sent = request.headers.get(CSRF_HEADER, "")
            if not record.csrf or not secrets.compare_digest(sent, record.csrf):
                raise Forbidden(f"missing or wrong {CSRF_HEADER} header", field=CSRF_HEADER)
        return Principal(user, record, via)

    def changes(self, entry: dict[str, Any]) -> Changes:
        """The collector of one write request, journaling its entry into each change it makes."""
        return Changes(draft=self.audit.draft(entry) if self.audit is not None else None)

    async def record(self, entry: dict[str, Any], changes: Changes | None = None) -> None:
        if self.audit is None:
            return
        try:
            await self.audit.record(entry, changes.draft if changes is not None else None)
        except Exception as exc:  # an audit write must not turn a done change into an error
            log.error("audit write failed", error=repr(exc), entry=entry.get("path"))


ACCESS: web.AppKey[Access] = web.AppKey("access")
PRINCIPAL: web.RequestKey[Principal] = web.RequestKey("principal", Principal)


def principal(request: web.Request) -> Principal:
    if PRINCIPAL not in request:
        raise Unauthenticated("authentication required")
    return request[PRINCIPAL]


def client_address(request: web.Request) -> str:
    return request.remote or "unknown"


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
    if not allows(need, who.name, who.user.roles):
        if request.method in WRITE:
            await access.record({**entry, "status": 403, "outcome": "denied"})
        what = f"{need.role} on project {need.project!r}" if need.project else "cluster admin"
        if need.access == "self":
            what = f"to be {need.user!r} or a cluster admin"
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


def whoami(who: Principal) -> dict[str, Any]:
    return {
        "user": who.user.public(),
        "via": who.via,
        "token": who.token.public(),
    }
