"""HTTP routes of identity and access: login/logout, users, tokens, projects, audit.

Who may call what is decided by the rule table (cluster/permissions.py) in ``access_middleware``,
not here; handlers only do the work.
"""

from __future__ import annotations

import json
import re
import secrets
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from aiohttp import web

from cluster import passwords
from cluster.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    NotConnected,
    NotFound,
    Unauthenticated,
    Unavailable,
)
from cluster.etcd import Compare, Op
from cluster.fields import NAME_PATTERN
from cluster.groups import GroupStore
from cluster.identity import (
    USER_PATTERN,
    TokenSpec,
    User,
    UserFields,
    parse_user_fields,
    parse_user_spec,
    token_expiry,
)
from cluster.models import parse_model
from cluster.permissions import is_admin, visible_projects
from cluster.quotas import parse_overrides
from cluster.runas import parse_users
from logstore.store import StoreUnavailable
from nodes.api.access import (
    COOKIE,
    Access,
    check_login_origin,
    client_address,
    is_tls,
    principal,
    whoami,
)
from nodes.api.http import body_json, int_query, ok, paged, project_of
from nodes.api.openapi import LIMIT, STR, ProjectList, documented

_USER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@\-]{0,63}")

if TYPE_CHECKING:
    from nodes.api.context import ApiContext

LOGIN_FAILED = "invalid user name or password"
PROJECT_NAME = re.compile(NAME_PATTERN)
LOGIN_NAME = re.compile(USER_PATTERN)


class AuthApi:
    def __init__(self, node: ApiContext, access: Access) -> None:
        self.node = node
        self.access = access

    # -- login ----------------------------------------------------------------------------------

    async def login(self, request: web.Request) -> web.Response:
        check_login_origin(request)
        data = await body_json(request)
        username, password = data.get("username"), data.get("password")
        if not isinstance(username, str) or not username or len(username) > 64:
            raise InvalidInput("username is required", field="username")
        if not isinstance(password, str) or not password or len(password) > 1024:
            raise InvalidInput("password is required", field="password")
        address = client_address(request)
        store = self.access.store()
        # a name no user can have is never looked up (a lone surrogate cannot even become an
        # etcd key: it answered 500), but costs the same dummy hash as an unknown user
        user = await store.find_user(username) if LOGIN_NAME.fullmatch(username) else None
        stored = user.password_hash if user is not None and user.password_hash else None
        good = await self.access.check_password(request, username, password, stored, what="login")
        if not good or user is None or stored is None or not user.enabled:
            raise Unauthenticated(LOGIN_FAILED)
        if passwords.needs_rehash(stored):
            rehashed = await self.access.hashing.run(passwords.hash_password, password)
            await store.update_user(user.name, UserFields(), password_hash=rehashed)
        expires = store.clock() + timedelta(seconds=self.node.config.session_ttl)
        csrf = secrets.token_urlsafe(24)
        secret, record = await store.create_token(
            user.name, kind="session", description="login", expires_at=expires, csrf=csrf
        )
        await self.access.record(
            {
                "actor": user.name,
                "method": "POST",
                "path": request.path,
                "status": 200,
                "outcome": "login",
                "token": record.id,
                "address": address,
            }
        )
        resp = ok(
            {
                "token": secret,
                "expires_at": expires.isoformat(),
                "csrf_token": csrf,
                "user": user.public(),
            }
        )
        if data.get("cookie", True):
            resp.set_cookie(
                COOKIE,
                secret,
                max_age=self.node.config.session_ttl,
                path="/",
                httponly=True,
                samesite="Strict",
                secure=is_tls(request),
            )
        return resp

    @documented(status="204")
    async def logout(self, request: web.Request) -> web.Response:
        who = principal(request)
        await self.access.store().revoke_token(who.name, who.token.id)
        resp = web.Response(status=204)
        resp.del_cookie(COOKIE, path="/")
        return resp

    @documented()
    async def me(self, request: web.Request) -> web.Response:
        return ok(whoami(principal(request)))

    # -- users ----------------------------------------------------------------------------------

    @documented(query={"after": STR, "limit": LIMIT})
    async def list_users(self, request: web.Request) -> web.Response:
        users = await self.access.store().list_users()
        page, more = paged(request, users, lambda u: u.name, _USER_NAME)
        return ok({"users": [u.public() for u in page], "next": more})

    @documented(status="201")
    async def create_user(self, request: web.Request) -> web.Response:
        spec = parse_user_spec(await body_json(request))
        hashed = None
        if spec.password is not None:
            passwords.check_password_rules(spec.password)
            hashed = await self.access.hashing.run(passwords.hash_password, spec.password)
        store = self.access.store()
        user = await store.create_user(store.new_user(spec, hashed))
        return ok(user.public(), 201)

    @documented()
    async def get_user(self, request: web.Request) -> web.Response:
        user, _ = await self.access.store().get_user_kv(request.match_info["user"])
        return ok(user.public())

    async def _keeps_an_admin(self, name: str, after: User | None) -> None:
        """Refuse a change that would leave the cluster without an enabled cluster admin."""
        users = await self.access.store().list_users()
        admins = [u for u in users if u.enabled and is_admin(u.roles) and u.name != name]
        if after is not None and after.enabled and is_admin(after.roles):
            admins.append(after)
        if not admins:
            raise Conflict("this would leave no enabled cluster admin", field="name")

    @documented()
    async def patch_user(self, request: web.Request) -> web.Response:
        name = request.match_info["user"]
        fields = parse_user_fields(await body_json(request))
        store = self.access.store()
        old, _ = await store.get_user_kv(name)
        preview = old.model_copy(update=fields.model_dump(exclude_unset=True, exclude={"password"}))
        await self._keeps_an_admin(name, preview)
        hashed = None
        if fields.password is not None:
            passwords.check_password_rules(fields.password)
            hashed = await self.access.hashing.run(passwords.hash_password, fields.password)
        user = await store.update_user(name, fields, password_hash=hashed)
        if hashed is not None:  # an admin reset: the account's API tokens go too (D167)
            await store.revoke_tokens(name, kinds=("api", "bootstrap"))
        return ok(user.public())

    @documented(status="204")
    async def delete_user(self, request: web.Request) -> web.Response:
        name = request.match_info["user"]
        await self.access.store().get_user_kv(name)
        await self._keeps_an_admin(name, None)
        await self.access.store().delete_user(name)
        return web.Response(status=204)

    @documented(status="204")
    async def set_password(self, request: web.Request) -> web.Response:
        """A user changes their own password (giving the current one); an admin sets anyone's."""
        name = request.match_info["user"]
        who = principal(request)
        data = await body_json(request)
        new = data.get("password")
        if not isinstance(new, str):
            raise InvalidInput("password is required", field="password")
        passwords.check_password_rules(new)
        store = self.access.store()
        user, _ = await store.get_user_kv(name)
        revoke = data.get("revoke_tokens", False)
        if not isinstance(revoke, bool):
            raise InvalidInput("revoke_tokens must be true or false", field="revoke_tokens")
        own = who.name == name
        if not is_admin(who.user.roles):
            # a user proves the current password; guesses are throttled and audited like logins
            current = data.get("current_password")
            if not isinstance(current, str) or not current or len(current) > 1024:
                raise InvalidInput("current_password is required", field="current_password")
            good = await self.access.check_password(
                request, name, current, user.password_hash, what="current_password"
            )
            if not good:
                raise InvalidInput("current_password is wrong", field="current_password")
        hashed = await self.access.hashing.run(passwords.hash_password, new)
        await store.update_user(name, UserFields(), password_hash=hashed, must_change=False)
        if not own or revoke:
            # an admin reset means the account may be in the wrong hands: its API tokens go too
            await store.revoke_tokens(name, kinds=("api", "bootstrap"))
        return web.Response(status=204)

    # -- tokens ---------------------------------------------------------------------------------

    @documented()
    async def list_tokens(self, request: web.Request) -> web.Response:
        found = await self.access.store().list_tokens(request.match_info["user"])
        return ok({"tokens": [t.public() for t in found]})

    @documented(status="201")
    async def create_token(self, request: web.Request) -> web.Response:
        name = request.match_info["user"]
        spec = parse_model(TokenSpec, await body_json(request, optional=True))
        store = self.access.store()
        await store.get_user_kv(name)
        if spec.scope != "all" and not is_admin(principal(request).user.roles):
            raise Forbidden("only a cluster admin may create a metrics token", field="scope")
        expires = token_expiry(spec, store.clock())
        secret, record = await store.create_token(
            name, description=spec.description, expires_at=expires, scope=spec.scope
        )
        return ok({**record.public(), "token": secret}, 201)

    @documented(status="204")
    async def revoke_token(self, request: web.Request) -> web.Response:
        await self.access.store().revoke_token(
            request.match_info["user"], request.match_info["token"]
        )
        return web.Response(status=204)

    # -- projects -------------------------------------------------------------------------------

    @documented(answer=ProjectList, query={"after": STR, "limit": LIMIT})
    async def list_projects(self, request: web.Request) -> web.Response:
        res = await self.node.etcd.range_all(self.node.keys.projects(), keys_only=True)
        names = sorted(kv.key.rsplit("/", 1)[-1] for kv in res.kvs)
        visible = visible_projects(principal(request).user.roles, names)
        page, more = paged(request, visible, str)
        return ok({"projects": page, "next": more})

    @documented(status="201")
    async def create_project(self, request: web.Request) -> web.Response:
        data = await body_json(request)
        name = data.get("name")
        if not isinstance(name, str):
            raise InvalidInput("name is required", field="name")
        if not PROJECT_NAME.fullmatch(name):
            raise InvalidInput(f"invalid project name {name!r}", field="name")
        return await self._put_project(name, data, create_only=True)

    @documented(also=("201",))
    async def put_project(self, request: web.Request) -> web.Response:
        name = project_of(request)
        data = await body_json(request, optional=True)
        return await self._put_project(name, data, create_only=False)

    async def _put_project(
        self, name: str, data: dict[str, Any], create_only: bool
    ) -> web.Response:
        description = data.get("description", "")
        if not isinstance(description, str) or len(description) > 1000:
            raise InvalidInput("description must be a string (max 1000)", field="description")
        users: list[str] | None = None  # absent: unchanged
        if "run_as_users" in data:
            raw = data["run_as_users"]
            if not isinstance(raw, list) or len(raw) > 1000:
                raise InvalidInput(
                    "run_as_users must be a list of user names (max 1000)", field="run_as_users"
                )
            try:
                users = parse_users(raw, "run_as_users")
            except ValueError as exc:
                raise InvalidInput(str(exc), field="run_as_users") from None
        quotas = parse_overrides(data.get("quotas")) if "quotas" in data else None
        key, etcd = self.node.keys.project(name), self.node.etcd
        for _ in range(5):
            kv = await etcd.get(key)
            if kv is not None and create_only:
                raise Conflict(f"project {name!r} already exists", field="name")
            old = json.loads(kv.value) if kv is not None else {}
            doc: dict[str, Any] = {**old, "name": name, "description": description}
            doc.pop("quotas", None)
            kept = old.get("quotas") if quotas is None else quotas  # absent: keep the old ones
            if kept:
                doc["quotas"] = kept
            if users is not None:  # absent: keep the old ones (D142)
                doc["run_as_users"] = users
            compare = Compare.modified(key, kv.mod_revision) if kv else Compare.absent(key)
            res = await etcd.txn([compare], [Op.put(key, json.dumps(doc))])
            if res.succeeded:
                return ok(await self._project_view(name, doc), 201 if kv is None else 200)
        raise Conflict(f"project {name!r} is being changed concurrently; retry", field="name")

    async def _project_view(self, name: str, doc: dict[str, Any]) -> dict[str, Any]:
        overrides = doc.get("quotas") if isinstance(doc.get("quotas"), dict) else {}
        view: dict[str, Any] = {
            "name": name,
            "description": doc.get("description", ""),
            "run_as_users": list(doc.get("run_as_users") or []),  # cluster admins set it (D142)
            "quota_overrides": overrides,
            "quotas": self.node.config.quotas.overridden(overrides).as_dict(),
        }
        if self.node.store is not None:
            view["usage"] = await self.node.store.project_usage(name)
        return view

    @documented()
    async def get_project(self, request: web.Request) -> web.Response:
        name = project_of(request)
        kv = await self.node.etcd.get(self.node.keys.project(name))
        if kv is None:
            raise NotFound(f"project {name!r} not found", field="project")
        return ok(await self._project_view(name, json.loads(kv.value)))

    @documented(status="204")
    async def delete_project(self, request: web.Request) -> web.Response:
        name = project_of(request)
        keys, etcd = self.node.keys, self.node.etcd
        jobs = await etcd.range(keys.jobs(name), count_only=True)
        if jobs.count:
            raise Conflict(f"project {name!r} still has {jobs.count} job(s)", field="project")
        flows = await etcd.range(keys.workflows(name), count_only=True)
        if flows.count:
            raise Conflict(f"project {name!r} still has {flows.count} workflow(s)", field="project")
        active = await etcd.range(keys.actives(name), count_only=True)
        if active.count:
            raise Conflict(
                f"project {name!r} still has {active.count} pending or running run(s); "
                "cancel them first",
                field="project",
            )
        # the record goes with its secrets, runs, executions and their indexes (D201): the next
        # project of that name must not reference the old team's secrets nor read its runs'
        # output. One transaction, fenced: a job, workflow or run written since the counts above
        # makes it fail (409), and nothing is deleted.
        since = jobs.revision
        res = await etcd.txn(
            [
                Compare.unchanged_since(keys.jobs(name), since),
                Compare.unchanged_since(keys.workflows(name), since),
                Compare.unchanged_since(keys.actives(name), since),
            ],
            [
                Op.delete(keys.project(name)),
                *[Op.delete(p, prefix=True) for p in keys.project_data(name)],
                Op.delete(keys.notification_defaults(name)),
                Op.delete(keys.project_run_limits(name)),  # a cluster admin's overrides (D173)
                Op.delete(keys.run_admissions(name)),  # holds of manual runs (D512)
                Op.put(keys.rules_marker(), '{"changed": "project"}'),  # its calendars (D339)
            ],
        )
        if not res.succeeded:
            raise Conflict(
                f"project {name!r} changed while it was being deleted; retry", field="project"
            )
        deleted = int(res.responses[0].response_delete_range.deleted)
        # grants on a deleted project go with it: a new project of the same name starts with
        # nobody's grants but those on "*" (D165). Also on a repeated DELETE, so a node that died
        # between the two steps leaves nothing behind once the call is retried.
        dropped = await self.access.store().drop_grants(name)
        # its node-group grants go with it (D155): a new project of that name starts with none
        await GroupStore(etcd, keys, self.node.clock).forget_project(name)
        if not deleted and not dropped:
            raise NotFound(f"project {name!r} not found", field="project")
        return web.Response(status=204)

    # -- audit ----------------------------------------------------------------------------------

    @documented(query={"limit": LIMIT, "before": STR, "actor": STR, "kind": STR})
    async def audit(self, request: web.Request) -> web.Response:
        if self.access.audit is None:
            raise NotConnected()
        limit = int_query(request, "limit", 100, 1, 1000)
        before = request.query.get("before") or None
        if before is not None and (not before.isdigit() or len(before) > 20):
            raise InvalidInput("before must be an audit entry id", field="before")
        actor = request.query.get("actor") or None
        if actor is not None and len(actor) > 256:
            raise InvalidInput("actor is too long (max 256)", field="actor")
        kind = request.query.get("kind", "all")
        if kind not in ("all", "changes", "denied", "own"):
            raise InvalidInput("kind must be all, changes, denied or own", field="kind")
        entries = await self.access.audit.list(
            limit=limit,
            before=before,
            actor=actor,
            kind=kind,  # type: ignore[arg-type]
        )
        return ok({"entries": entries})

    @documented()
    async def audit_export(self, request: web.Request) -> web.Response:
        """Copy audit entries newer than the last export to the log store (append-only)."""
        if self.access.audit is None:
            raise NotConnected()
        store = self.node.logs.store
        try:
            done = await self.access.audit.export(store.put_bytes)
        except StoreUnavailable as exc:
            raise Unavailable(f"the log store is unavailable: {exc}") from None
        done["urls"] = [store.url(k) for k in done["objects"]]
        return ok(done)


def add_routes(app: web.Application, node: ApiContext) -> None:
    api = AuthApi(node, node.access)
    r = app.router
    r.add_post("/api/v1/auth/login", api.login)
    r.add_post("/api/v1/auth/logout", api.logout)
    r.add_get("/api/v1/auth/me", api.me)
    r.add_get("/api/v1/users", api.list_users)
    r.add_post("/api/v1/users", api.create_user)
    r.add_get("/api/v1/users/{user}", api.get_user)
    r.add_patch("/api/v1/users/{user}", api.patch_user)
    r.add_delete("/api/v1/users/{user}", api.delete_user)
    r.add_put("/api/v1/users/{user}/password", api.set_password)
    r.add_get("/api/v1/users/{user}/tokens", api.list_tokens)
    r.add_post("/api/v1/users/{user}/tokens", api.create_token)
    r.add_delete("/api/v1/users/{user}/tokens/{token}", api.revoke_token)
    r.add_get("/api/v1/projects", api.list_projects)
    r.add_post("/api/v1/projects", api.create_project)
    r.add_get("/api/v1/projects/{project}", api.get_project)
    r.add_put("/api/v1/projects/{project}", api.put_project)
    r.add_delete("/api/v1/projects/{project}", api.delete_project)
    r.add_get("/api/v1/audit", api.audit)
    r.add_post("/api/v1/audit/export", api.audit_export)
