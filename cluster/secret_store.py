"""Project secrets in etcd (``secrets/<project>/<name>``): sealed values, their metadata, the
references jobs and workflows make to them, and rotation to the current key.

Values are write-only: nothing here returns a value except ``values()``, which the worker calls
when a run starts. What the API lists is ``meta()``: name, key id, times, who set it.

References and deletion are kept consistent without an index: a job or workflow write that
references secrets compares that each of them exists (in the same transaction), and a deletion
scans the project's jobs and workflows at one revision and compares that none of them was written
since (D146). So a referenced secret can never be deleted, and a document can never be stored
with a reference to a secret that does not exist.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from cluster.errors import Conflict, InvalidInput, NotFound
from cluster.etcd import Compare, Etcd, Op, prefix_end
from cluster.keys import Keys
from cluster.secretbox import KeyRing, Sealed, SecretUnreadable, require_ring

MAX_SECRET_BYTES = 16 * 1024  # a value (a PEM key, a service-account JSON, a kubeconfig)
MAX_SECRETS_PER_PROJECT = 1000
MAX_REFERENCED = 100  # distinct secrets one document references (one compare each)
SCAN_PAGE = 200


class SecretNotFound(NotFound):
    code = "secret_not_found"


class SecretRecord(BaseModel):
    """What is stored: the sealed value and who set it when. Never holds the plaintext."""

    name: str
    project: str
    key_id: str
    nonce: str  # base64
    ciphertext: str  # base64, GCM tag included
    created_at: datetime
    updated_at: datetime
    updated_by: str | None = None

    def sealed(self) -> Sealed:
        return Sealed(self.key_id, base64.b64decode(self.nonce), base64.b64decode(self.ciphertext))

    def meta(self) -> dict[str, Any]:
        """The public face of a secret (what the API, the UI and the CLI show)."""
        return {
            "name": self.name,
            "key_id": self.key_id,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
            "updated_by": self.updated_by,
        }


def check_value(value: bytes) -> None:
    if not value:
        raise InvalidInput("value: a secret cannot be empty", field="value")
    if len(value) > MAX_SECRET_BYTES:
        raise InvalidInput(
            f"value: {len(value)} bytes; a secret holds at most {MAX_SECRET_BYTES}", field="value"
        )
    if b"\0" in value:
        raise InvalidInput(
            "value: a secret cannot hold a NUL byte (it goes into env)", field="value"
        )


def references(doc: Mapping[str, Any]) -> dict[str, str]:
    """Field path -> secret name, for every ``{secret: …}`` in a job's or workflow's document."""
    out: dict[str, str] = {}

    def scan(env: Any, base: str) -> None:
        if isinstance(env, dict):
            for var, item in env.items():
                if isinstance(item, dict) and isinstance(item.get("secret"), str):
                    out[f"{base}env.{var}.secret"] = item["secret"]

    scan(doc.get("env"), "")
    for i, task in enumerate(doc.get("tasks") or []):
        if isinstance(task, dict):
            scan(task.get("env"), f"tasks.{i}.")
    return out


async def reference_guards(
    etcd: Etcd, keys: Keys, project: str, refs: Mapping[str, str]
) -> list[Any]:
    """Compares that keep every referenced secret in place while a document is written (add
    them to its transaction); an unknown reference is a 400 naming its field
    (``env.DB_PASSWORD.secret``), before anything is written."""
    names = sorted(set(refs.values()))
    if not names:
        return []
    if len(names) > MAX_REFERENCED:
        raise InvalidInput(
            f"references {len(names)} secrets; at most {MAX_REFERENCED}", field="env"
        )
    res = await etcd.txn([], [Op.get(keys.secret(project, n), keys_only=True) for n in names])
    present = {n for i, n in enumerate(names) if res.range_kvs(i)}
    for field, name in refs.items():
        if name not in present:
            raise InvalidInput(
                f"{field}: no secret {name!r} in project {project!r} "
                f"(create it first: cronmesh secret set {name})",
                field=field,
            )
    return [Compare.exists(keys.secret(project, n)) for n in names]


class SecretStore:
    def __init__(
        self,
        etcd: Etcd,
        keys: Keys,
        clock: Callable[[], datetime],
        ring: Callable[[], KeyRing | None],
    ) -> None:
        self.etcd = etcd
        self.keys = keys
        self.clock = clock
        self._ring = ring

    def ring(self) -> KeyRing:
        return require_ring(self._ring(), "project secrets")

    # -- reading metadata ----------------------------------------------------------------------

    async def list_page(
        self, project: str, *, limit: int = 100, after: str | None = None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of a project's secrets by name; the second item is the next ``after``."""
        base = self.keys.secrets(project)
        start = base + after + "\0" if after else base
        res = await self.etcd.range(start, end=prefix_end(base).decode(), limit=limit)
        items = [SecretRecord.model_validate_json(kv.value).meta() for kv in res.kvs]
        return items, (items[-1]["name"] if res.more and items else None)

    async def get(self, project: str, name: str) -> dict[str, Any]:
        kv = await self.etcd.get(self.keys.secret(project, name))
        if kv is None:
            raise SecretNotFound(f"secret {name!r} not found in project {project!r}", field="name")
        return SecretRecord.model_validate_json(kv.value).meta()

    # -- writing -------------------------------------------------------------------------------

    async def put(
        self, project: str, name: str, value: bytes, *, actor: str | None = None
    ) -> tuple[dict[str, Any], bool]:
        """Seal and store ``value``; answers (metadata, created)."""
        check_value(value)
        ring = self.ring()
        key = self.keys.secret(project, name)
        for _ in range(5):
            kv = await self.etcd.get(key)
            guards = [Compare.modified(key, kv.mod_revision if kv else 0)]
            if kv is None:
                count = await self.etcd.range(self.keys.secrets(project), count_only=True)
                # a creation that raced ours lands after the count: we retry (D500)
                guards.append(Compare.unchanged_since(self.keys.secrets(project), count.revision))
                if count.count >= MAX_SECRETS_PER_PROJECT:
                    raise Conflict(
                        f"project {project!r} has {count.count} secrets; at most "
                        f"{MAX_SECRETS_PER_PROJECT}",
                        field="name",
                    )
            old = SecretRecord.model_validate_json(kv.value) if kv else None
            now = self.clock()
            record = self._record(ring, project, name, value, old, now, actor)
            res = await self.etcd.txn(guards, [Op.put(key, record.model_dump_json())])
            if res.succeeded:
                return record.meta(), kv is None
        raise Conflict(f"secret {name!r} is being changed concurrently; retry", field="name")

    @staticmethod
    def _record(
        ring: KeyRing,
        project: str,
        name: str,
        value: bytes,
        old: SecretRecord | None,
        now: datetime,
        actor: str | None,
    ) -> SecretRecord:
        sealed = ring.seal(project, name, value)
        return SecretRecord(
            name=name,
            project=project,
            key_id=sealed.key_id,
            nonce=base64.b64encode(sealed.nonce).decode(),
            ciphertext=base64.b64encode(sealed.ciphertext).decode(),
            created_at=old.created_at if old else now,
            updated_at=now,
            updated_by=actor,
        )

    async def users(self, project: str, name: str) -> tuple[list[str], int]:
        """The jobs and workflows of ``project`` that reference secret ``name``, read at one
        revision (returned, for the deletion's guard). Paged: never one unbounded read."""
        found: list[str] = []
        revision = 0
        for kind, base in (
            ("job", self.keys.jobs(project)),
            ("workflow", self.keys.workflows(project)),
        ):
            start, end = base, prefix_end(base).decode()
            while True:
                res = await self.etcd.range(start, end=end, limit=SCAN_PAGE, revision=revision)
                revision = revision or res.revision
                for kv in res.kvs:
                    if name in references(json.loads(kv.value)).values():
                        found.append(f"{kind} {kv.key.rsplit('/', 1)[-1]}")
                if not res.more or not res.kvs:
                    break
                start = res.kvs[-1].key + "\0"
        return found, revision

    async def delete(self, project: str, name: str) -> None:
        """Delete a secret no job or workflow references (409 naming them otherwise)."""
        key = self.keys.secret(project, name)
        for _ in range(5):
            if await self.etcd.get(key) is None:
                raise SecretNotFound(
                    f"secret {name!r} not found in project {project!r}", field="name"
                )
            users, revision = await self.users(project, name)
            if users:
                shown = ", ".join(users[:20]) + (
                    f" and {len(users) - 20} more" if len(users) > 20 else ""
                )
                raise Conflict(
                    f"secret {name!r} is used by {shown}: remove the references first",
                    field="name",
                )
            res = await self.etcd.txn(
                [
                    Compare.exists(key),
                    Compare.unchanged_since(self.keys.jobs(project), revision),
                    Compare.unchanged_since(self.keys.workflows(project), revision),
                ],
                [Op.delete(key)],
            )
            if res.succeeded:
                return
        raise Conflict(f"secret {name!r}: jobs are being changed concurrently; retry", field="name")

    # -- references ----------------------------------------------------------------------------

    async def guards(self, project: str, refs: Mapping[str, str]) -> list[Any]:
        return await reference_guards(self.etcd, self.keys, project, refs)

    # -- the worker ----------------------------------------------------------------------------

    async def values(self, project: str, names: Iterable[str]) -> dict[str, bytes]:
        """Read and open the named secrets (at a run's start). Raises ``SecretNotFound``,
        ``SecretUnreadable`` or ``SecretsKeyMissing`` naming the secret."""
        wanted = sorted(set(names))
        if not wanted:
            return {}
        ring = self.ring()
        res = await self.etcd.txn([], [Op.get(self.keys.secret(project, n)) for n in wanted])
        out: dict[str, bytes] = {}
        for i, name in enumerate(wanted):
            kvs = res.range_kvs(i)
            if not kvs:
                raise SecretNotFound(f"secret {name!r} no longer exists in project {project!r}")
            record = SecretRecord.model_validate_json(kvs[0].value)
            out[name] = ring.open(project, name, record.sealed())
        return out

    # -- rotation ------------------------------------------------------------------------------

    async def rotate(self, *, dry_run: bool = False) -> dict[str, Any]:
        """Re-seal, under this node's current key, every value sealed with another key (all
        projects). Each value is a compare-and-swap; a value changed meanwhile is read again."""
        ring = self.ring()
        base = self.keys.secrets()
        start, end = base, prefix_end(base).decode()
        by_key: dict[str, int] = {}
        rotated = 0
        failed: list[dict[str, str]] = []
        while True:
            page = await self.etcd.range(start, end=end, limit=SCAN_PAGE)
            for kv in page.kvs:
                record = SecretRecord.model_validate_json(kv.value)
                if record.key_id == ring.current:
                    by_key[record.key_id] = by_key.get(record.key_id, 0) + 1
                    continue
                if dry_run:
                    by_key[record.key_id] = by_key.get(record.key_id, 0) + 1
                    continue
                try:
                    await self._reseal(ring, kv.key, kv.mod_revision, record)
                    rotated += 1
                    by_key[ring.current] = by_key.get(ring.current, 0) + 1
                except (SecretUnreadable, Conflict) as exc:
                    by_key[record.key_id] = by_key.get(record.key_id, 0) + 1
                    failed.append(
                        {"project": record.project, "name": record.name, "error": exc.message}
                    )
            if not page.more or not page.kvs:
                break
            start = page.kvs[-1].key + "\0"
        return {
            "current_key": ring.current,
            "keys": ring.ids,
            "rotated": rotated,
            "values_by_key": by_key,
            "failed": failed[:100],
            "dry_run": dry_run,
        }

    async def _reseal(self, ring: KeyRing, key: str, revision: int, record: SecretRecord) -> None:
        for _ in range(3):
            value = ring.open(record.project, record.name, record.sealed())
            sealed = ring.seal(record.project, record.name, value)
            new = record.model_copy(
                update={
                    "key_id": sealed.key_id,
                    "nonce": base64.b64encode(sealed.nonce).decode(),
                    "ciphertext": base64.b64encode(sealed.ciphertext).decode(),
                }
            )
            res = await self.etcd.txn(
                [Compare.modified(key, revision)], [Op.put(key, new.model_dump_json())]
            )
            if res.succeeded:
                return
            kv = await self.etcd.get(key)
            if kv is None:
                return  # deleted meanwhile: nothing to rotate
            record, revision = SecretRecord.model_validate_json(kv.value), kv.mod_revision
            if record.key_id == ring.current:
                return
        raise Conflict(f"secret {record.name!r} kept changing during rotation; run it again")
