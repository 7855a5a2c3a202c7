"""Calendars, blackout windows and the cluster freeze in etcd (D236, D237, D239).

Calendars and windows live per scope: a project, or ``*`` for the cluster
(``/calendars/{scope}/{name}``, ``/blackouts/{scope}/{name}``); the freeze is one key. A
schedule names calendars; a name resolves to the project's calendar, else the cluster's. A job
that names a calendar keeps it in place while the job is written (a compare in the job's
transaction), and a calendar a job names cannot be deleted (409 naming the jobs, as secrets).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from pydantic import BaseModel

from cluster.blackouts import Window, WindowSpec
from cluster.calendars import Calendar, CalendarSpec
from cluster.errors import Conflict, InvalidInput, NotFound
from cluster.etcd import Compare, Etcd, Op, prefix_end
from cluster.keys import Keys
from cluster.models import Job, JobSpec, parse_model
from cluster.slotrules import CLUSTER, Freeze, SlotRules

MAX_PER_SCOPE = 100  # calendars, and windows, of one project or of the cluster
MAX_DOC_BYTES = 64 * 1024
MAX_NOTE = 1024
SCAN_PAGE = 200

S = TypeVar("S", bound=BaseModel)


class CalendarNotFound(NotFound):
    code = "calendar_not_found"


class WindowNotFound(NotFound):
    code = "blackout_not_found"


def calendar_refs(job: JobSpec) -> list[tuple[str, str]]:
    """(field, calendar name) of every calendar the job's schedules name."""
    out = []
    for i, spec in enumerate(job.schedules):
        if spec.calendar is None:
            continue
        for kind in ("skip", "only"):
            for j, name in enumerate(getattr(spec.calendar, kind)):
                out.append((f"schedules.{i}.calendar.{kind}.{j}", name))
    return out


MAX_NAMED_CALENDARS = 32  # distinct calendars one job names (its schedules together)


async def calendar_guards(etcd: Etcd, keys: Keys, project: str, job: JobSpec) -> list[Any]:
    """Compares that keep every calendar the job names in place while it is written; an unknown
    name is a 400 naming its field (``schedules.0.calendar.skip.1``), before anything is written.
    """
    refs = calendar_refs(job)
    names = sorted({n for _, n in refs})
    if not names:
        return []
    if len(names) > MAX_NAMED_CALENDARS:  # two reads each, in one etcd transaction
        raise InvalidInput(
            f"schedules: name {len(names)} distinct calendars; at most {MAX_NAMED_CALENDARS}",
            field="schedules",
        )
    own = [keys.calendar(project, n) for n in names]
    shared = [keys.calendar(CLUSTER, n) for n in names]
    res = await etcd.txn([], [Op.get(k, keys_only=True) for k in own + shared])
    guards: dict[str, Any] = {}
    for i, name in enumerate(names):
        if res.range_kvs(i):
            guards[name] = Compare.exists(own[i])
        elif res.range_kvs(len(names) + i):
            guards[name] = Compare.exists(shared[i])
    for field, name in refs:
        if name not in guards:
            raise InvalidInput(
                f"{field}: no calendar {name!r} in project {project!r} or the cluster "
                f"(create it first: cronmesh calendar apply)",
                field=field,
            )
    return list(guards.values())


def _scope_label(scope: str) -> str:
    return "the cluster" if scope == CLUSTER else f"project {scope!r}"


class CalendarStore:
    def __init__(self, etcd: Etcd, keys: Keys, clock: Callable[[], datetime]) -> None:
        self.etcd = etcd
        self.keys = keys
        self.clock = clock

    # -- documents (calendars and windows alike) -----------------------------------------------

    async def _list(
        self, base: str, model: type[S], limit: int, after: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        start = base + (after + "\0" if after else "")
        res = await self.etcd.range(start, end=prefix_end(base).decode(), limit=limit)
        items = [json.loads(kv.value) for kv in res.kvs]
        return items, (items[-1]["name"] if res.more and items else None)

    async def _get(self, key: str, missing: NotFound) -> dict[str, Any]:
        kv = await self.etcd.get(key)
        if kv is None:
            raise missing
        doc: dict[str, Any] = json.loads(kv.value)
        return doc

    async def _put(
        self, base: str, key: str, spec: BaseModel, scope: str, what: str, actor: str | None
    ) -> tuple[dict[str, Any], bool]:
        name = getattr(spec, "name", "")
        for _ in range(5):
            kv = await self.etcd.get(key)
            guards = [Compare.modified(key, kv.mod_revision if kv else 0)]
            if kv is None:
                count = await self.etcd.range(base, count_only=True)
                # a creation that raced ours lands in ``base`` after the count: we retry (D500)
                guards.append(Compare.unchanged_since(base, count.revision))
                if count.count >= MAX_PER_SCOPE:
                    raise Conflict(
                        f"{_scope_label(scope)} has {count.count} {what}s; at most {MAX_PER_SCOPE}",
                        field="name",
                    )
            now = self.clock().isoformat()
            old = json.loads(kv.value) if kv else {}
            doc = {
                **spec.model_dump(mode="json"),
                "scope": scope,
                "created_at": old.get("created_at", now),
                "updated_at": now,
                "updated_by": actor,
            }
            text = json.dumps(doc)
            if len(text) > MAX_DOC_BYTES:
                raise InvalidInput(
                    f"the {what} is {len(text)} bytes; at most {MAX_DOC_BYTES}", field="name"
                )
            ops = [Op.put(key, text), self._marked(what)]
            if kv is None and scope != CLUSTER:  # as a job does: the project exists from then
                ops.append(Op.put_if_absent(self.keys.project(scope), json.dumps({"name": scope})))
            res = await self.etcd.txn(guards, ops)
            if res.succeeded:
                return doc, kv is None
        raise Conflict(f"{what} {name!r} is being changed concurrently; retry", field="name")

    # -- calendars ------------------------------------------------------------------------------

    async def list_calendars(
        self, scope: str, *, limit: int, after: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        return await self._list(self.keys.calendars(scope), CalendarSpec, limit, after)

    async def get_calendar(self, scope: str, name: str) -> dict[str, Any]:
        missing = CalendarNotFound(
            f"calendar {name!r} not found in {_scope_label(scope)}", field="name"
        )
        return await self._get(self.keys.calendar(scope, name), missing)

    async def put_calendar(
        self, scope: str, spec: CalendarSpec, actor: str | None = None
    ) -> tuple[dict[str, Any], bool]:
        key = self.keys.calendar(scope, spec.name)
        return await self._put(self.keys.calendars(scope), key, spec, scope, "calendar", actor)

    async def calendar_users(self, scope: str, name: str) -> tuple[list[str], int]:
        """The jobs that name calendar ``name`` (every project's for a cluster calendar), read
        at one revision (returned, for the deletion's guard). Paged."""
        base = self.keys.jobs(None if scope == CLUSTER else scope)
        found: list[str] = []
        revision = 0
        start, end = base, prefix_end(base).decode()
        while True:
            res = await self.etcd.range(start, end=end, limit=SCAN_PAGE, revision=revision)
            revision = revision or res.revision
            for kv in res.kvs:
                doc = json.loads(kv.value)
                for spec in doc.get("schedules") or []:
                    ref = spec.get("calendar") or {}
                    if name in (ref.get("skip") or []) + (ref.get("only") or []):
                        found.append("/".join(self.keys.tail(kv.key, self.keys.jobs())))
                        break
            if not res.more or not res.kvs:
                return found, revision
            start = res.kvs[-1].key + "\0"

    async def delete_calendar(self, scope: str, name: str) -> None:
        """Delete a calendar no job names (409 naming them otherwise)."""
        key = self.keys.calendar(scope, name)
        jobs = self.keys.jobs(None if scope == CLUSTER else scope)
        for _ in range(5):
            await self.get_calendar(scope, name)
            users, revision = await self.calendar_users(scope, name)
            if users:
                shown = ", ".join(users[:20]) + (
                    f" and {len(users) - 20} more" if len(users) > 20 else ""
                )
                raise Conflict(
                    f"calendar {name!r} is used by job {shown}: remove the references first",
                    field="name",
                )
            res = await self.etcd.txn(
                [Compare.exists(key), Compare.unchanged_since(jobs, revision)],
                [Op.delete(key), self._marked("calendar")],
            )
            if res.succeeded:
                return
        raise Conflict(f"calendar {name!r}: jobs are being changed concurrently; retry")

    # -- blackout windows -----------------------------------------------------------------------

    async def list_windows(
        self, scope: str, *, limit: int, after: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        return await self._list(self.keys.blackouts(scope), WindowSpec, limit, after)

    async def get_window(self, scope: str, name: str) -> dict[str, Any]:
        missing = WindowNotFound(
            f"blackout window {name!r} not found in {_scope_label(scope)}", field="name"
        )
        return await self._get(self.keys.blackout(scope, name), missing)

    async def put_window(
        self, scope: str, spec: WindowSpec, actor: str | None = None
    ) -> tuple[dict[str, Any], bool]:
        key = self.keys.blackout(scope, spec.name)
        return await self._put(
            self.keys.blackouts(scope), key, spec, scope, "blackout window", actor
        )

    async def delete_window(self, scope: str, name: str) -> None:
        res = await self.etcd.txn(
            [Compare.exists(self.keys.blackout(scope, name))],
            [Op.delete(self.keys.blackout(scope, name)), self._marked("blackout window")],
        )
        if not res.succeeded:
            raise WindowNotFound(
                f"blackout window {name!r} not found in {_scope_label(scope)}", field="name"
            )

    # -- freeze ---------------------------------------------------------------------------------

    async def freeze_state(self) -> dict[str, Any] | None:
        kv = await self.etcd.get(self.keys.freeze())
        return json.loads(kv.value) if kv else None

    async def freeze(self, note: str, actor: str | None) -> dict[str, Any]:
        if not isinstance(note, str) or not note.strip():
            raise InvalidInput("note: say why the cluster is frozen", field="note")
        if len(note) > MAX_NOTE:
            raise InvalidInput(f"note: at most {MAX_NOTE} characters", field="note")
        doc = {"note": note, "by": actor, "at": self.clock().isoformat()}
        ops = [Op.put(self.keys.freeze(), json.dumps(doc)), self._marked("freeze")]
        await self.etcd.txn([], ops)
        return doc

    async def unfreeze(self) -> bool:
        res = await self.etcd.txn(
            [Compare.exists(self.keys.freeze())],
            [Op.delete(self.keys.freeze()), self._marked("freeze")],
        )
        return res.succeeded

    def _marked(self, what: str) -> Any:
        """The op that moves the rules marker, in the same transaction as the change: a leader
        whose snapshot is older can then commit no tick (D339)."""
        return Op.put(self.keys.rules_marker(), json.dumps({"changed": what}))

    # -- everything at once (the plan simulator) -----------------------------------------------

    async def load_rules(self, projects: list[str] | None = None) -> SlotRules:
        """The calendars and windows of the cluster and of ``projects`` (None: every project)
        and the freeze, read at one revision (bounded: at most MAX_PER_SCOPE of each per
        scope)."""
        scopes: list[str | None] = [None] if projects is None else [CLUSTER, *projects]
        freeze = await self.etcd.range(self.keys.freeze(), prefix=False)
        rev = freeze.revision
        rules = SlotRules(freeze=freeze_of(freeze.kvs[0].value if freeze.kvs else None))
        for scope in scopes:
            cals = await self.etcd.range_all(self.keys.calendars(scope), revision=rev)
            wins = await self.etcd.range_all(self.keys.blackouts(scope), revision=rev)
            for kv in cals.kvs:
                add_calendar(rules, self.keys, kv.key, kv.value)
            for kv in wins.kvs:
                add_window(rules, self.keys, kv.key, kv.value)
        return rules


def _doc(model: type[S], value: bytes) -> S:
    doc = json.loads(value)
    fields = model.model_fields
    return parse_model(model, {k: v for k, v in doc.items() if k in fields})


async def freeze_status(etcd: Etcd, keys: Keys) -> dict[str, Any] | None:
    """The freeze as ``/status`` shows it: None when not frozen."""
    kv = await etcd.get(keys.freeze())
    return json.loads(kv.value) if kv else None


async def annotate_next(
    store: Any, job: Job, upcoming: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """A job's next fire times (``GET …/ticks``) with what the calendars, windows and freeze
    would make of each: ``outcome`` (fire|skip|defer), ``reason``, ``deferred_to``."""
    if not upcoming:
        return upcoming
    rules = await CalendarStore(store.etcd, store.keys, store.clock).load_rules([job.project])
    job_rules = rules.for_job(job.project, job.name, job.tags)
    specs = {s.fingerprint(): s for s in job.schedules}
    for item in upcoming:
        spec = specs.get(item["schedule"])
        tick = datetime.fromisoformat(item["tick"])
        d = job_rules.decide(tick, spec.timezone, spec.calendar) if spec else None
        if d is not None:
            item["outcome"] = d.outcome
            if d.reason:
                item.update(reason=d.reason, detail=d.detail)
            if d.to is not None:
                item["deferred_to"] = d.to.isoformat()
    return upcoming


def freeze_of(value: bytes | None) -> Freeze | None:
    if not value:
        return None
    doc = json.loads(value)
    return Freeze(str(doc.get("note", "")), doc.get("by"), doc.get("at"))


def add_calendar(rules: SlotRules, keys: Keys, key: str, value: bytes | None) -> None:
    """Apply one calendar key's value (None: deleted) to ``rules``."""
    scope, name = keys.tail(key, keys.calendars())[:2]
    if value is None:
        rules.calendars.get(scope, {}).pop(name, None)
        return
    rules.calendars.setdefault(scope, {})[name] = Calendar(_doc(CalendarSpec, value))


def add_window(rules: SlotRules, keys: Keys, key: str, value: bytes | None) -> None:
    """Apply one window key's value (None: deleted) to ``rules``."""
    scope, name = keys.tail(key, keys.blackouts())[:2]
    if value is None:
        rules.windows.get(scope, {}).pop(name, None)
        return
    rules.windows.setdefault(scope, {})[name] = Window(_doc(WindowSpec, value), scope)
