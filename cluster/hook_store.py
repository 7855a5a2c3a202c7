"""Named hooks in etcd (``hooks/<project>/<name>``) and the runs their deliveries start.

A hook's secret is sealed with the secrets key ring (AES-256-GCM, as project secrets are, D146),
bound to its project and hook name; nothing here returns it except ``secret()``, which the
delivery route calls to verify a signature, and ``put`` once when it generated the secret.

A delivery with an ``Idempotency-Key`` creates, in ONE transaction, its run (or execution) and
``hook-deliveries/<project>/<hook>/<digest>`` naming it, compared absent: of two copies of a
delivery racing on two nodes, one creates, the other reads the first one's run (D270). The key
rides on a lease of about a day (one lease per node per hour, ``DeliveryLeases``), so etcd
forgets it without a sweeper; at most ``MAX_IDEMPOTENCY_KEYS`` are kept per hook.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cluster import params
from cluster.errors import (
    Conflict,
    CronmeshError,
    InvalidInput,
    NotFound,
    QuotaExceeded,
    TooManyRequests,
)
from cluster.etcd import Compare, Etcd, LeaseGone, Op, OutcomeUnknown, prefix_end
from cluster.hooks import (
    IDEMPOTENCY_HEADER,
    IDEMPOTENCY_WINDOW,
    MAX_HOOKS_PER_PROJECT,
    MAX_IDEMPOTENCY_KEYS,
    SEALED_PREFIX,
    HookRecord,
    HookSpec,
)
from cluster.keys import Keys
from cluster.limits import Counted
from cluster.secretbox import KeyRing, Sealed, require_ring
from cluster.store import Store
from cluster.workflow_store import (
    WorkflowStore,
    create_execution_ops,
    execution_charges,
    new_execution,
)

SCAN_PAGE = 200


# a record of the usual size whose secret never opens: what ``decoy`` reads
_DECOY = HookRecord(
    name="decoy",
    project="decoy",
    target={"job": "decoy"},  # type: ignore[arg-type]
    parameters={"ref": "ref"},
    auth="signature",
    rate_per_minute=60,
    burst=10,
    max_body_bytes=256 * 1024,
    enabled=False,
    description="",
    key_id="decoy",
    nonce=base64.b64encode(bytes(12)).decode(),
    ciphertext=base64.b64encode(bytes(52)).decode(),
    created_at=datetime(2026, 1, 1, tzinfo=UTC),
    updated_at=datetime(2026, 1, 1, tzinfo=UTC),
).model_dump_json()


class HookNotFound(NotFound):
    code = "hook_not_found"


@dataclass(frozen=True, slots=True)
class Started:
    """What a delivery started (or, replayed, had started)."""

    kind: str  # "run" or "execution"
    id: str
    replayed: bool = False


class DeliveryLeases:
    """The lease idempotency keys ride on: one per node per hour, each granted for
    ``IDEMPOTENCY_WINDOW`` plus that hour, so every key lives between one and about 1.04 days."""

    def __init__(self, etcd: Etcd, clock: Callable[[], float] = time.monotonic) -> None:
        self.etcd = etcd
        self.clock = clock
        self._lease: tuple[int, float] | None = None
        # concurrent deliveries at the hour (or at start) wait for one grant instead of each
        # granting a 25 h lease of its own (a burst of 1000 was 1000 leases) (D284)
        self._granting = asyncio.Lock()

    async def current(self, *, fresh: bool = False) -> int:
        stale = self._lease
        async with self._granting:
            lease = self._lease
            if lease is not None and lease is not stale:
                return lease[0]  # granted by another delivery while this one waited
            now = self.clock()
            if fresh or lease is None or now - lease[1] > 3600:
                lease = (await self.etcd.grant(IDEMPOTENCY_WINDOW + 3600), now)
                self._lease = lease
            return lease[0]


class HookStore:
    def __init__(
        self,
        store: Store,
        ring: Callable[[], KeyRing | None],
        leases: DeliveryLeases,
    ) -> None:
        self.store = store
        self.etcd = store.etcd
        self.keys: Keys = store.keys
        self.clock = store.clock
        self._ring = ring
        self.leases = leases

    def ring(self) -> KeyRing:
        return require_ring(self._ring(), "hook secrets")

    # -- documents -----------------------------------------------------------------------------

    async def get(self, project: str, name: str) -> HookRecord:
        found = await self.find(project, name)
        if found is None:
            raise HookNotFound(f"hook {name!r} not found in project {project!r}", field="name")
        return found[0]

    async def find(self, project: str, name: str) -> tuple[HookRecord, int] | None:
        kv = await self.etcd.get(self.keys.hook(project, name))
        if kv is None:
            return None
        return HookRecord.model_validate_json(kv.value), kv.mod_revision

    async def list_page(
        self, project: str, *, limit: int = 100, after: str | None = None
    ) -> tuple[list[HookRecord], str | None]:
        base = self.keys.hooks(project)
        start = base + after + "\0" if after else base
        res = await self.etcd.range(start, end=prefix_end(base).decode(), limit=limit)
        items = [HookRecord.model_validate_json(kv.value) for kv in res.kvs]
        return items, (items[-1].name if res.more and items else None)

    def _target_key(self, project: str, spec: HookSpec | HookRecord) -> str:
        t = spec.target
        if t.job is not None:
            return self.keys.job(project, t.job)
        return self.keys.workflow(project, t.workflow or "")

    async def put(
        self, project: str, spec: HookSpec, *, actor: str | None = None
    ) -> tuple[HookRecord, bool, str | None]:
        """Create or replace a hook; answers (record, created, the generated secret or None).

        The target must exist (400 naming ``target.job`` / ``target.workflow``; compared in the
        same transaction). A new hook without a ``secret`` gets a generated one, answered once;
        a replaced hook without one keeps its stored secret."""
        ring = self.ring()
        key = self.keys.hook(project, spec.name)
        target_key = self._target_key(project, spec)
        field = f"target.{spec.target.kind}"
        for _ in range(5):
            kv = await self.etcd.get(key)
            if await self.etcd.get(target_key) is None:
                raise InvalidInput(
                    f"{field}: no {spec.target.kind} {spec.target.name!r} in project {project!r}",
                    field=field,
                )
            guards = [Compare.modified(key, kv.mod_revision if kv else 0)]
            guards.append(Compare.exists(target_key))
            if kv is None:
                count = await self.etcd.range(self.keys.hooks(project), count_only=True)
                # a creation that raced ours lands after the count: we retry (D500)
                guards.append(Compare.unchanged_since(self.keys.hooks(project), count.revision))
                if count.count >= MAX_HOOKS_PER_PROJECT:
                    raise QuotaExceeded(
                        f"project {project!r} has {count.count} hooks; at most "
                        f"{MAX_HOOKS_PER_PROJECT}",
                        field="hooks",
                    )
            old = HookRecord.model_validate_json(kv.value) if kv else None
            generated = None
            if spec.secret is not None:
                sealed = ring.seal(project, SEALED_PREFIX + spec.name, spec.secret.encode())
            elif old is not None:
                sealed = Sealed(
                    old.key_id, base64.b64decode(old.nonce), base64.b64decode(old.ciphertext)
                )
            else:
                generated = "cmh_" + secrets.token_urlsafe(32)
                sealed = ring.seal(project, SEALED_PREFIX + spec.name, generated.encode())
            now = self.clock()
            record = HookRecord(
                **spec.model_dump(exclude={"secret"}),
                project=project,
                key_id=sealed.key_id,
                nonce=base64.b64encode(sealed.nonce).decode(),
                ciphertext=base64.b64encode(sealed.ciphertext).decode(),
                created_at=old.created_at if old else now,
                updated_at=now,
                updated_by=actor,
            )
            res = await self.etcd.txn(guards, [Op.put(key, record.model_dump_json())])
            if res.succeeded:
                return record, kv is None, generated
        raise Conflict(f"hook {spec.name!r} is being changed concurrently; retry", field="name")

    async def delete(self, project: str, name: str) -> None:
        """Delete a hook and the idempotency keys of its deliveries."""
        key = self.keys.hook(project, name)
        res = await self.etcd.txn(
            [Compare.exists(key)],
            [Op.delete(key), Op.delete(self.keys.hook_deliveries(project, name), prefix=True)],
        )
        if not res.succeeded:
            raise HookNotFound(f"hook {name!r} not found in project {project!r}", field="name")

    def secret(self, record: HookRecord) -> bytes:
        sealed = Sealed(
            record.key_id, base64.b64decode(record.nonce), base64.b64decode(record.ciphertext)
        )
        return self.ring().open(record.project, SEALED_PREFIX + record.name, sealed)

    def decoy(self) -> None:
        """The work of reading an existing hook's record and secret (parse, AES-GCM open), done
        for a delivery to one that does not exist, so that ~11 µs do not tell strangers which
        names exist (D269, D284); the open fails and nothing is answered from it."""
        record = HookRecord.model_validate_json(_DECOY)
        try:
            ring = self.ring()
            sealed = Sealed(
                ring.current, base64.b64decode(record.nonce), base64.b64decode(record.ciphertext)
            )
            ring.open(record.project, SEALED_PREFIX + record.name, sealed)
        except CronmeshError:
            pass

    def _record_key(self, project: str, started: Started) -> str:
        if started.kind == "run":
            return self.keys.run(project, started.id)
        return self.keys.execution(project, started.id)

    # -- deliveries ----------------------------------------------------------------------------

    async def replayed(self, record: HookRecord, digest: str, body: str) -> Started | None:
        """The run an earlier delivery with this idempotency key started, if one did; the same
        key with another body is a 409 (the sender reused a key for a different event)."""
        kv = await self.etcd.get(self.keys.hook_delivery(record.project, record.name, digest))
        if kv is None:
            return None
        seen = json.loads(kv.value)
        if seen.get("body") != body:
            raise Conflict(
                f"{IDEMPOTENCY_HEADER} was used before with a different body",
                field=IDEMPOTENCY_HEADER,
            )
        return Started(seen["kind"], seen["id"], replayed=True)

    def remembered(self, record: HookRecord) -> Counted:
        """The hook's idempotency keys, at most ``MAX_IDEMPOTENCY_KEYS``: the count a delivery
        with a key holds a place in until it is written (the run gate's hold, D513), so
        concurrent deliveries cannot all pass one count."""

        def refusal(held: int) -> CronmeshError:
            return TooManyRequests(
                f"hook {record.name!r} remembers {held} idempotency keys, its most; "
                "they are forgotten a day after their delivery",
                retry_after=3600,
                field=IDEMPOTENCY_HEADER,
            )

        prefix = self.keys.hook_deliveries(record.project, record.name)
        return Counted(prefix, MAX_IDEMPOTENCY_KEYS, refusal)

    async def start(
        self,
        record: HookRecord,
        parameters: dict[str, str],
        idempotency: tuple[str, str] | None,
    ) -> Started:
        """Create the target's run or execution; with ``idempotency`` (key digest, body digest)
        also the delivery's key, compared absent in the same transaction. The caller checked
        the hook's count of keys (``remembered``)."""
        project = record.project
        marker: list[Any] = []
        guards: list[Any] = []
        idem_key = ""
        if idempotency is not None:  # the caller holds its place among the keys (``remembered``)
            idem_key = self.keys.hook_delivery(project, record.name, idempotency[0])
            guards.append(Compare.absent(idem_key))
        fresh = False
        for _ in range(4):
            if record.target.job is not None:
                job, rev = await self.store.get_job_kv(project, record.target.job)
                declared = params.declared(job.parameters, (s.parameters for s in job.schedules))
                params.check_given(f"job {job.name}", declared, parameters)  # as a trigger (D285)
                run = self.store.new_run(job, source="hook", parameters=parameters)
                started = Started("run", run.id)
                ops = self.store.create_run_ops(run)
                await self.store.check_history(project, self.store.charge_of(run))
                target_key = self.keys.job(project, job.name)
            else:
                name = record.target.workflow or ""
                wf, rev = await WorkflowStore(self.store).get_workflow_kv(project, name)
                declared = params.declared(
                    wf.parameters,
                    [s.parameters for s in wf.schedules] + [t.parameters for t in wf.tasks],
                )
                params.check_given(f"workflow {name}", declared, parameters)  # (D285)
                ex = new_execution(self.store, wf, parameters=parameters, source="hook")
                started = Started("execution", ex.id)
                ops = create_execution_ops(self.keys, ex)
                await self.store.check_history(project, execution_charges(ex))
                target_key = self.keys.workflow(project, name)
            if idempotency is not None:
                doc = {
                    "kind": started.kind,
                    "id": started.id,
                    "body": idempotency[1],
                    "at": self.clock().isoformat(),
                }
                lease = await self.leases.current(fresh=fresh)
                marker = [Op.put(idem_key, json.dumps(doc), lease=lease)]
            try:
                res = await self.etcd.txn(
                    [*guards, Compare.modified(target_key, rev)], [*marker, *ops]
                )
            except LeaseGone:
                fresh = True  # etcd lost or revoked the lease: take a new one
                continue
            except OutcomeUnknown:
                # may have applied: read it back, never create blindly a second time (D270)
                if await self.etcd.get(self._record_key(project, started)) is not None:
                    return started
                raise
            if res.succeeded:
                return started
            if idempotency is not None:
                again = await self.replayed(record, idempotency[0], idempotency[1])
                if again is not None:
                    return again  # another copy of this delivery won the race
        raise Conflict(
            f"{record.target.kind} {record.target.name!r} changed while triggering; retry",
            field="target",
        )


async def rotate_hook_secrets(
    etcd: Etcd, keys: Keys, ring: KeyRing, *, dry_run: bool = False
) -> dict[str, Any]:
    """Re-seal every hook secret (all projects) sealed with another key than ``ring.current``,
    each a compare-and-swap (a hook changed meanwhile is left for the next run): what
    ``POST /api/v1/secrets/rotate`` does for hooks, so an old key can leave the ring."""
    base = keys.hooks()
    start, end = base, prefix_end(base).decode()
    by_key: dict[str, int] = {}
    rotated = 0
    failed: list[dict[str, str]] = []
    while True:
        page = await etcd.range(start, end=end, limit=SCAN_PAGE)
        for kv in page.kvs:
            record = HookRecord.model_validate_json(kv.value)
            kid = record.key_id
            if kid != ring.current and not dry_run:
                try:
                    record = _resealed(ring, record)
                    res = await etcd.txn(
                        [Compare.modified(kv.key, kv.mod_revision)],
                        [Op.put(kv.key, record.model_dump_json())],
                    )
                    if not res.succeeded:
                        raise Conflict("changed during rotation; run it again")
                    rotated += 1
                    kid = record.key_id
                except CronmeshError as exc:
                    failed.append(
                        {"project": record.project, "hook": record.name, "error": exc.message}
                    )
            by_key[kid] = by_key.get(kid, 0) + 1
        if not page.more or not page.kvs:
            break
        start = page.kvs[-1].key + "\0"
    return {"rotated": rotated, "values_by_key": by_key, "failed": failed[:100]}


def _resealed(ring: KeyRing, record: HookRecord) -> HookRecord:
    name = SEALED_PREFIX + record.name
    sealed = Sealed(
        record.key_id, base64.b64decode(record.nonce), base64.b64decode(record.ciphertext)
    )
    again = ring.seal(record.project, name, ring.open(record.project, name, sealed))
    return record.model_copy(
        update={
            "key_id": again.key_id,
            "nonce": base64.b64encode(again.nonce).decode(),
            "ciphertext": base64.b64encode(again.ciphertext).decode(),
        }
    )
