"""Users, tokens and the first admin, as stored in etcd (``users/``, ``tokens/``, ``identity/``,
and ``user-tokens/<user>/``: each token's record without its digest, written and deleted with
it, so what concerns one user's tokens reads theirs only, D514).

A user record holds the password *hash* only; tokens are stored as SHA-256 digests under an id
derived from the digest (cluster/tokens.py). A token with an expiry is also bound to an etcd lease
that outlives it by a minute, so expired session tokens vanish by themselves (bounded growth);
``resolve`` still checks the expiry itself.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from cluster import tokens
from cluster.errors import Conflict, CronmeshError, InvalidInput, NotFound
from cluster.etcd import KV, Compare, Etcd, Op
from cluster.fields import NAME_PATTERN
from cluster.keys import Keys
from cluster.models import parse_model
from cluster.permissions import GRANT_KEY, Role

USER_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.@\-]{0,63}$"
MAX_TOKENS_PER_USER = 100
# Live login sessions per user: a new login beyond it ends the oldest (D203). Without a cap any
# user could store a session (and an etcd lease) per login, forever growing the token prefix that
# every token listing reads whole.
MAX_SESSIONS_PER_USER = 20
LEASE_SLACK = 60
MAX_TOKEN_LIFE = timedelta(days=10 * 366)  # also the bound of expires_in


class UserNotFound(NotFound):
    code = "user_not_found"


class TokenNotFound(NotFound):
    code = "token_not_found"


def _grants(value: Any) -> Any:
    if isinstance(value, dict):
        for key in value:
            if not isinstance(key, str) or not GRANT_KEY.fullmatch(key):
                raise ValueError(f"role grant key {key!r} must be a project name or '*'")
    return value


class UserFields(BaseModel):
    """What an admin may set on a user (all optional: also the PATCH body)."""

    model_config = ConfigDict(extra="forbid")

    display_name: str | None = Field(default=None, max_length=200)
    email: str | None = Field(default=None, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")
    mobile: str | None = Field(default=None, max_length=40, pattern=r"^\+?[0-9 ()\-]{3,40}$")
    enabled: bool | None = None
    roles: dict[str, Role] | None = Field(default=None, max_length=1000)
    password: str | None = Field(default=None, min_length=8, max_length=1024)

    _check_roles = field_validator("roles", mode="before")(classmethod(lambda cls, v: _grants(v)))


class UserSpec(UserFields):
    name: str = Field(pattern=USER_PATTERN)


class User(BaseModel):
    """A stored user. ``password_hash`` never leaves the node (see ``public``)."""

    model_config = ConfigDict(extra="ignore")

    name: str
    display_name: str = ""
    email: str | None = None
    mobile: str | None = None
    enabled: bool = True
    roles: dict[str, Role] = Field(default_factory=dict)
    password_hash: str | None = None
    # set on a generated first-admin password: the API answers 403 password_change_required to
    # everything but the password change, logout and "me" until it is changed (D169)
    must_change_password: bool = False
    created_at: datetime
    updated_at: datetime

    def public(self) -> dict[str, Any]:
        data = self.model_dump(mode="json", exclude={"password_hash"})
        data["has_password"] = self.password_hash is not None
        return data


TokenScope = Literal["all", "metrics"]


class TokenSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    description: str = Field(default="", max_length=200)
    # "metrics": may read /metrics and /status only (for a Prometheus scrape); cluster admins only
    scope: TokenScope = "all"
    expires_in: int | None = Field(default=None, ge=60, le=10 * 366 * 86400)  # MAX_TOKEN_LIFE
    expires_at: datetime | None = None


class TokenRecord(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str
    digest: str
    user: str
    kind: Literal["api", "session", "bootstrap"] = "api"
    description: str = ""
    created_at: datetime
    expires_at: datetime | None = None
    csrf: str | None = None  # session tokens used as a cookie
    scope: TokenScope = "all"

    def public(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude={"digest", "csrf"})

    def expired(self, now: datetime) -> bool:
        return self.expires_at is not None and now >= self.expires_at


def dumps(model: BaseModel) -> str:
    return model.model_dump_json()


class IdentityStore:
    def __init__(self, etcd: Etcd, keys: Keys, clock: Callable[[], datetime]) -> None:
        self.etcd = etcd
        self.keys = keys
        self.clock = clock

    # -- users -----------------------------------------------------------------------------------

    async def get_user_kv(self, name: str) -> tuple[User, int]:
        kv = await self.etcd.get(self.keys.user(name))
        if kv is None:
            raise UserNotFound(f"user {name!r} not found", field="name")
        return User.model_validate_json(kv.value), kv.mod_revision

    async def find_user(self, name: str) -> User | None:
        kv = await self.etcd.get(self.keys.user(name))
        return None if kv is None else User.model_validate_json(kv.value)

    async def list_users(self) -> list[User]:
        res = await self.etcd.range_all(self.keys.users())
        return [User.model_validate_json(kv.value) for kv in res.kvs]

    def new_user(self, spec: UserSpec, password_hash: str | None) -> User:
        now = self.clock()
        return User(
            name=spec.name,
            display_name=spec.display_name or "",
            email=spec.email,
            mobile=spec.mobile,
            enabled=True if spec.enabled is None else spec.enabled,
            roles=spec.roles or {},
            password_hash=password_hash,
            created_at=now,
            updated_at=now,
        )

    async def create_user(self, user: User) -> User:
        key = self.keys.user(user.name)
        res = await self.etcd.txn([Compare.absent(key)], [Op.put(key, dumps(user))])
        if not res.succeeded:
            raise Conflict(f"user {user.name!r} already exists", field="name")
        return user

    async def update_user(
        self,
        name: str,
        fields: UserFields,
        password_hash: str | None = None,
        must_change: bool | None = None,
    ) -> User:
        for _ in range(10):
            old, rev = await self.get_user_kv(name)
            changes = fields.model_dump(exclude_unset=True, exclude={"password"})
            if password_hash is not None:
                changes["password_hash"] = password_hash
            if must_change is not None:
                changes["must_change_password"] = must_change
            user = old.model_copy(update={**changes, "updated_at": self.clock()})
            user = User.model_validate(user.model_dump())
            key = self.keys.user(name)
            res = await self.etcd.txn([Compare.modified(key, rev)], [Op.put(key, dumps(user))])
            if res.succeeded:
                if user.enabled != old.enabled:
                    # disabled or re-enabled: every token goes, API tokens too, so re-enabling an
                    # account never revives credentials issued before it was disabled (D167)
                    await self.revoke_tokens(name)
                elif user.enabled is False or password_hash is not None:
                    # a disabled user, or one whose password changed, loses their sessions
                    await self.revoke_tokens(name, kinds=("session",))
                return user
        raise Conflict(f"user {name!r} is changing concurrently; retry", field="name")

    async def drop_grants(self, project: str) -> list[str]:
        """Remove every user's grant on ``project`` (it was deleted: a new project of the same
        name must not inherit them); the names of the users changed."""
        changed = []
        for user in await self.list_users():
            if project not in user.roles:
                continue
            for _ in range(10):
                old, rev = await self.get_user_kv(user.name)
                if project not in old.roles:
                    break
                roles = {p: r for p, r in old.roles.items() if p != project}
                new = old.model_copy(update={"roles": roles, "updated_at": self.clock()})
                key = self.keys.user(user.name)
                res = await self.etcd.txn([Compare.modified(key, rev)], [Op.put(key, dumps(new))])
                if res.succeeded:
                    changed.append(user.name)
                    break
            else:
                raise Conflict(f"user {user.name!r} is changing concurrently; retry", field="name")
        return changed

    async def delete_user(self, name: str) -> None:
        deleted = await self.etcd.delete(self.keys.user(name))
        if not deleted:
            raise UserNotFound(f"user {name!r} not found", field="name")
        await self.revoke_tokens(name)

    # -- tokens ----------------------------------------------------------------------------------

    async def _own_tokens(self, user: str) -> tuple[list[tuple[TokenRecord, KV]], int]:
        """``user``'s tokens from their index (D514), with the index entries, and the revision
        read: the other users' tokens are not read."""
        res = await self.etcd.range_all(self.keys.user_tokens(user))
        return [(TokenRecord.model_validate_json(kv.value), kv) for kv in res.kvs], res.revision

    async def list_tokens(self, user: str) -> list[TokenRecord]:
        now = self.clock()
        return [t for t, _ in (await self._own_tokens(user))[0] if not t.expired(now)]

    async def create_token(
        self,
        user: str,
        *,
        kind: Literal["api", "session", "bootstrap"] = "api",
        description: str = "",
        expires_at: datetime | None = None,
        csrf: str | None = None,
        token: str | None = None,
        scope: TokenScope = "all",
    ) -> tuple[str, TokenRecord]:
        """Store a new token (or the given one) for ``user``; answers the secret, shown once."""
        now = self.clock()
        if expires_at is not None and expires_at <= now:
            raise InvalidInput("expires_at must be in the future", field="expires_at")
        ended = await self._sessions_to_end(user) if kind == "session" else []
        gate = await self._api_token_gate(user) if kind == "api" else []  # before any lease
        secret = token or tokens.new_token()
        record = TokenRecord(
            id=tokens.token_id(secret),
            digest=tokens.digest(secret),
            user=user,
            kind=kind,
            description=description,
            created_at=now,
            expires_at=expires_at,
            csrf=csrf,
            scope=scope,
        )
        lease = 0
        if expires_at is not None:
            ttl = int((expires_at - now).total_seconds()) + LEASE_SLACK
            lease = await self.etcd.grant(ttl)
        key = self.keys.token(record.id)
        ops = [Op.put(key, dumps(record), lease), Op.put(*self._entry(record), lease)]
        for t, _ in ended:
            ops += [Op.delete(self.keys.token(t.id)), Op.delete(self.keys.user_token(user, t.id))]
        guards = [Compare.absent(key), Compare.exists(self.keys.user(user))]
        try:
            for attempt in range(5):
                if attempt:  # the gate moved (another token was created): count again
                    gate = await self._api_token_gate(user)
                res = await self.etcd.txn([*guards, *gate], ops)
                if res.succeeded or not gate:
                    break
        except BaseException:
            if lease:
                await self.etcd.revoke(lease)
            raise
        if not res.succeeded:
            if lease:
                await self.etcd.revoke(lease)
            raise Conflict(f"cannot create the token: user {user!r} is gone or the id is taken")
        for _, kv in ended:  # their leases go too (an etcd lease per login would pile up otherwise)
            if kv.lease:
                # best effort: the records are gone already; a lease left expires with its TTL
                with contextlib.suppress(CronmeshError):
                    await self.etcd.revoke(kv.lease)
        return secret, record

    def _entry(self, record: TokenRecord) -> tuple[str, str]:
        """The token's entry in its user's index: the record without its digest (D514)."""
        entry = record.model_copy(update={"digest": "", "csrf": None})
        return self.keys.user_token(record.user, record.id), dumps(entry)

    async def _api_token_gate(self, user: str) -> list[Any]:
        """Refuse a 101st API token of ``user``; else the guard that none of their tokens was
        created since the count, so concurrent creations cannot all pass one count (D500). Reads
        the user's own index only (D514): every user's tokens were read per creation."""
        own, revision = await self._own_tokens(user)
        now = self.clock()
        held = sum(t.kind == "api" and not t.expired(now) for t, _ in own)
        if held >= MAX_TOKENS_PER_USER:
            raise Conflict(f"user {user!r} has {MAX_TOKENS_PER_USER} tokens; revoke some first")
        return [Compare.unchanged_since(self.keys.user_tokens(user), revision)]

    async def _sessions_to_end(self, user: str) -> list[tuple[TokenRecord, KV]]:
        """The oldest live sessions of ``user`` beyond ``MAX_SESSIONS_PER_USER - 1`` (a new
        login takes the last place), with their index entries (which carry their leases)."""
        now = self.clock()
        live = [
            (t.created_at, t.id, (t, kv))
            for t, kv in (await self._own_tokens(user))[0]
            if t.kind == "session" and not t.expired(now)
        ]
        live.sort(key=lambda item: (item[0], item[1]))
        return [pair for _, _, pair in live[: max(0, len(live) - MAX_SESSIONS_PER_USER + 1)]]

    async def resolve(self, token: str) -> tuple[TokenRecord, User] | None:
        """The token's record and its user, or None (unknown, expired, or a disabled user)."""
        if not token or len(token) > 512:
            return None
        kv = await self.etcd.get(self.keys.token(tokens.token_id(token)))
        if kv is None:
            return None
        record = TokenRecord.model_validate_json(kv.value)
        if not tokens.matches(token, record.digest) or record.expired(self.clock()):
            return None
        user = await self.find_user(record.user)
        if user is None or not user.enabled:
            return None
        return record, user

    async def revoke_token(self, user: str, token_id: str) -> None:
        key = self.keys.token(token_id)
        kv = await self.etcd.get(key)
        if kv is None:  # an entry an older node left when it revoked the token goes (D514)
            await self.etcd.delete(self.keys.user_token(user, token_id))
        if kv is None or TokenRecord.model_validate_json(kv.value).user != user:
            raise TokenNotFound(f"token {token_id!r} of user {user!r} not found", field="id")
        await self.etcd.txn(
            [Compare.modified(key, kv.mod_revision)],
            [Op.delete(key), Op.delete(self.keys.user_token(user, token_id))],
        )

    async def revoke_tokens(self, user: str, kinds: tuple[str, ...] | None = None) -> int:
        """Delete ``user``'s tokens (of ``kinds``): the number deleted. Not from the index alone
        (D519): a token an older node wrote during a rolling upgrade has no entry, and must not
        outlive its user's disabling, password reset or deletion; this runs on an admin's change
        of a user, rarely, so it reads every token, a page at a time."""
        own, _ = await self._own_tokens(user)
        found = {t.id for t, _ in own if kinds is None or t.kind in kinds}
        async for page in self.etcd.range_pages(self.keys.tokens()):
            for kv in page.kvs:
                record = TokenRecord.model_validate_json(kv.value)
                if record.user == user and (kinds is None or record.kind in kinds):
                    found.add(record.id)
        doomed = sorted(found)
        for i in range(0, len(doomed), 60):
            ops = []
            for t in doomed[i : i + 60]:
                ops += [Op.delete(self.keys.token(t)), Op.delete(self.keys.user_token(user, t))]
            await self.etcd.txn([], ops)
        return len(doomed)

    async def index_tokens(self) -> int:
        """Give the tokens from before the per-user index (D514) their entries, once per
        cluster; the number indexed. A token deleted meanwhile gets none (each entry compares
        its token unchanged)."""
        if await self.etcd.get(self.keys.user_tokens_indexed()) is not None:
            return 0
        done = 0
        for kv in (await self.etcd.range_all(self.keys.tokens())).kvs:
            record = TokenRecord.model_validate_json(kv.value)
            res = await self.etcd.txn(
                [Compare.modified(kv.key, kv.mod_revision)],
                [Op.put(*self._entry(record), kv.lease)],
            )
            done += res.succeeded
        await self.etcd.put(self.keys.user_tokens_indexed(), json.dumps({"at": str(self.clock())}))
        return done

    # -- first admin -----------------------------------------------------------------------------

    async def bootstrap(
        self, admin: str, password_hash: str | None, token: str | None, must_change: bool = False
    ) -> User | None:
        """Create the first admin unless the cluster was bootstrapped; None when another did."""
        now = self.clock()
        user = User(
            name=admin,
            display_name="Administrator",
            roles={"*": "admin"},
            password_hash=password_hash,
            must_change_password=must_change and password_hash is not None,
            created_at=now,
            updated_at=now,
        )
        ops = [
            Op.put(self.keys.bootstrapped(), json.dumps({"admin": admin, "at": now.isoformat()})),
            Op.put(self.keys.user(admin), dumps(user)),
        ]
        if token is not None:
            record = TokenRecord(
                id=tokens.token_id(token),
                digest=tokens.digest(token),
                user=admin,
                kind="bootstrap",
                description="bootstrap token from configuration",
                created_at=now,
            )
            ops.append(Op.put(self.keys.token(record.id), dumps(record)))
            ops.append(Op.put(*self._entry(record)))
        res = await self.etcd.txn(
            [Compare.absent(self.keys.bootstrapped()), Compare.absent(self.keys.user(admin))], ops
        )
        return user if res.succeeded else None


def parse_user_spec(data: Any) -> UserSpec:
    return parse_model(UserSpec, data)


def parse_user_fields(data: Any) -> UserFields:
    return parse_model(UserFields, data)


def token_expiry(spec: TokenSpec, now: datetime) -> datetime | None:
    if spec.expires_at is not None and spec.expires_in is not None:
        raise InvalidInput("give expires_at or expires_in, not both", field="expires_at")
    if spec.expires_in is not None:
        return now + timedelta(seconds=spec.expires_in)
    if spec.expires_at is not None and spec.expires_at.tzinfo is None:
        raise InvalidInput("expires_at needs a time zone (e.g. Z)", field="expires_at")
    if spec.expires_at is not None and not now < spec.expires_at <= now + MAX_TOKEN_LIFE:
        # the expiry becomes an etcd lease TTL: far futures were refused by etcd (a 503)
        raise InvalidInput(
            "expires_at must be in the future and at most 10 years ahead", field="expires_at"
        )
    return spec.expires_at


PROJECT_NAME = NAME_PATTERN
