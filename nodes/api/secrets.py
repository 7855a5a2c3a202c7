"""HTTP routes of project secrets (docs/security.md, "Secrets"). Write-only: no answer holds a
value; what is listed is names and metadata.

Routes:
  GET    /api/v1/projects/{project}/secrets?limit=&after=   names + metadata, paged by name
  GET    /api/v1/projects/{project}/secrets/{secret}         metadata of one
  PUT    /api/v1/projects/{project}/secrets/{secret}         {"value": "…"} or {"value_base64": "…"}
  DELETE /api/v1/projects/{project}/secrets/{secret}         409 while a job or workflow uses it
  POST   /api/v1/secrets/rotate?dry_run=1                    re-seal every value under the
                                                             current key (cluster admin)
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import TYPE_CHECKING

from aiohttp import web
from pydantic import BaseModel

from cluster.errors import InvalidInput, NotConnected
from cluster.fields import NAME_PATTERN
from cluster.hook_store import rotate_hook_secrets
from cluster.secret_store import MAX_SECRET_BYTES, SecretStore
from nodes.api.access import PRINCIPAL
from nodes.api.http import connected, int_query, ok, project_of
from nodes.api.openapi import LIMIT, STR, documented

if TYPE_CHECKING:
    from nodes.api.context import ApiContext

NAME_RE = re.compile(NAME_PATTERN)
MAX_BODY = 4 * MAX_SECRET_BYTES  # base64 and JSON escapes of the largest value fit


class SecretMeta(BaseModel):
    name: str
    key_id: str
    created_at: str
    updated_at: str
    updated_by: str | None = None


class SecretList(BaseModel):
    secrets: list[SecretMeta]
    next: str | None = None


class SecretValue(BaseModel):
    """Exactly one of ``value`` (text) or ``value_base64`` (any bytes but NUL)."""

    value: str | None = None
    value_base64: str | None = None


def secret_name(request: web.Request) -> str:
    name = request.match_info["secret"]
    if not NAME_RE.fullmatch(name):
        raise InvalidInput(
            f"invalid secret name {name!r}: [a-z0-9][a-z0-9-_.]{{0,62}}", field="name"
        )
    return name


async def secret_body(request: web.Request, name: str) -> bytes:
    """The value of a PUT, checked for size before it is parsed."""
    if (request.content_length or 0) > MAX_BODY:
        raise InvalidInput(f"value: at most {MAX_SECRET_BYTES} bytes", field="value")
    raw = await request.read()  # bounded by the app's client_max_size (1 MiB) as well
    if len(raw) > MAX_BODY:
        raise InvalidInput(f"value: at most {MAX_SECRET_BYTES} bytes", field="value")
    try:
        data = json.loads(raw) if raw.strip() else None
    except ValueError:
        raise InvalidInput("malformed JSON") from None
    except RecursionError:  # a body nested thousands deep, well under the size cap (D502)
        raise InvalidInput("malformed JSON: nested too deeply") from None
    if not isinstance(data, dict):
        raise InvalidInput('the body must be {"value": "…"} or {"value_base64": "…"}')
    extra = set(data) - {"value", "value_base64", "name"}
    if extra:
        field = sorted(extra)[0]
        raise InvalidInput(f"{field}: unknown field", field=field)
    if data.get("name", name) != name:
        raise InvalidInput(f"name {data['name']!r} in the body differs from the path", field="name")
    if ("value" in data) == ("value_base64" in data):
        raise InvalidInput("give exactly one of value or value_base64", field="value")
    if "value" in data:
        if not isinstance(data["value"], str):
            raise InvalidInput("value: must be a string", field="value")
        return data["value"].encode("utf-8", "surrogatepass")
    text = data["value_base64"]
    if not isinstance(text, str):
        raise InvalidInput("value_base64: must be a string", field="value_base64")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput("value_base64: not base64", field="value_base64") from None


class SecretApi:
    def __init__(self, node: ApiContext) -> None:
        self.node = node

    def store(self) -> SecretStore:
        secrets = self.node.secrets
        if secrets is None or not connected(self.node):
            raise NotConnected()
        return secrets

    @documented(answer=SecretList, query={"limit": LIMIT, "after": STR})
    async def list_secrets(self, request: web.Request) -> web.Response:
        """List a project's secrets: names and metadata, never values"""
        project = project_of(request)
        limit = int_query(request, "limit", 100, 1, 1000)
        after = request.query.get("after") or None
        if after is not None and not NAME_RE.fullmatch(after):
            raise InvalidInput("after must be a secret name", field="after")
        items, nxt = await self.store().list_page(project, limit=limit, after=after)
        return ok({"secrets": items, "next": nxt})

    @documented(answer=SecretMeta)
    async def get_secret(self, request: web.Request) -> web.Response:
        """Metadata of one secret (never its value)"""
        return ok(await self.store().get(project_of(request), secret_name(request)))

    @documented(body=SecretValue, answer=SecretMeta, also=("201",))
    async def put_secret(self, request: web.Request) -> web.Response:
        """Set a secret's value (write-only)"""
        project, name = project_of(request), secret_name(request)
        value = await secret_body(request, name)
        who = request[PRINCIPAL].name if PRINCIPAL in request else None
        meta, created = await self.store().put(project, name, value, actor=who)
        return ok(meta, 201 if created else 200)

    @documented(status="204")
    async def delete_secret(self, request: web.Request) -> web.Response:
        """Delete a secret no job or workflow references"""
        await self.store().delete(project_of(request), secret_name(request))
        return web.Response(status=204)

    @documented(query={"dry_run": {"type": "boolean"}})
    async def rotate(self, request: web.Request) -> web.Response:
        """Re-encrypt every secret under this node's current key"""
        dry = request.query.get("dry_run", "0") not in ("0", "false", "")
        store = self.store()
        out = await store.rotate(dry_run=dry)
        # hook secrets are sealed with the same ring (D268): re-sealed by the same command
        out["hooks"] = await rotate_hook_secrets(store.etcd, store.keys, store.ring(), dry_run=dry)
        return ok(out)


def add_routes(app: web.Application, node: ApiContext) -> None:
    api = SecretApi(node)
    base = "/api/v1/projects/{project}/secrets"
    r = app.router
    r.add_get(base, api.list_secrets)
    r.add_get(base + "/{secret}", api.get_secret)
    r.add_put(base + "/{secret}", api.put_secret)
    r.add_delete(base + "/{secret}", api.delete_secret)
    r.add_post("/api/v1/secrets/rotate", api.rotate)
