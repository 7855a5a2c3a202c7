"""``cronmesh apply -f DIR``, ``cronmesh diff -f DIR``, ``cronmesh export DIR`` (GitOps).

``apply --prune`` deletes only after a yes: asked on a terminal (listing what goes), given with
``--yes`` otherwise; without either, nothing at all is written (D250).
"""

from __future__ import annotations

import argparse
import sys
import urllib.parse
from pathlib import Path
from typing import Any, TextIO

from cluster.errors import InvalidInput
from nodes.cli.client import ApiError, call, call_all
from nodes.cli.gitops_plan import KINDS, Change, Doc, Kind, export_files, plan, read_folder
from nodes.cli.output import warn_saved


def add_parsers(sub: Any) -> None:
    for name, helptext in (
        ("apply", "make the cluster match a folder of job/workflow YAML files"),
        ("diff", "show what `apply` would change (exit code 1 when something would)"),
    ):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("-f", "--file", required=True, help="a folder (read recursively) or a file")
        p.add_argument(
            "--prune",
            action="store_true",
            help="also delete objects of the folder's projects that the folder no longer has",
        )
        if name == "apply":
            p.add_argument("--dry-run", action="store_true", help="print the plan only")
            p.add_argument(
                "-y",
                "--yes",
                action="store_true",
                help="delete without asking (needed for --prune deletions when stdin is not a "
                "terminal)",
            )
        p.set_defaults(func=_guarded(cmd_apply if name == "apply" else cmd_diff))
    e = sub.add_parser("export", help="write the cluster's jobs (and workflows) as a folder")
    e.add_argument("dir", help="target folder (created; existing files are overwritten)")
    e.add_argument("--all-projects", action="store_true", help="every project, not just -p")
    e.set_defaults(func=_guarded(cmd_export))


def _guarded(fn: Any) -> Any:
    """Errors exit with 2 (``diff`` uses 1 for "there are changes", like ``kubectl diff``)."""

    def run(args: argparse.Namespace) -> int:
        try:
            return int(fn(args))
        except InvalidInput as exc:
            print(f"cronmesh: {exc.message}", file=sys.stderr)
        except ApiError as exc:
            print(exc.describe(), file=sys.stderr)
        except OSError as exc:
            print(f"cronmesh: {exc}", file=sys.stderr)
        return 2

    return run


def _call(args: argparse.Namespace, method: str, path: str, body: Any = None) -> Any:
    return call(args, method, path, body)


def _all(args: argparse.Namespace, path: str, key: str) -> list[Any]:
    return call_all(args, path, key)


def _base(project: str, kind: Kind) -> str:
    return f"/api/v1/projects/{urllib.parse.quote(project)}/{kind.collection}"


def _list(args: argparse.Namespace, kind: Kind, project: str) -> list[dict[str, Any]] | None:
    """Objects of a kind in a project; None when this server has no such collection."""

    try:
        items = call_all(args, _base(project, kind), kind.collection)  # every page
    except ApiError as exc:
        if exc.status in (404, 405):
            return None
        raise
    return items if isinstance(items, list) else []


def _current(
    args: argparse.Namespace, desired: list[Doc], prune: bool
) -> dict[tuple[str, str, str], dict[str, Any]]:
    # With --prune, every kind of each project the folder names is compared.
    scope = {(d.kind.name, d.project) for d in desired}
    if prune:
        scope |= {(k, d.project) for d in desired for k in KINDS}
    current: dict[tuple[str, str, str], dict[str, Any]] = {}
    for kind_name, project in sorted(scope):
        kind = KINDS[kind_name]
        items = _list(args, kind, project)
        if items is None:
            if any(d.kind is kind for d in desired):
                raise InvalidInput(f"this cronmesh server has no {kind.collection} API")
            continue
        for item in items:
            current[(kind.name, project, item["name"])] = item
    return current


def _plan(args: argparse.Namespace) -> tuple[list[Change], list[Change]]:
    """The changes, and the deletions ``--prune`` would add (already in the changes with it)."""
    desired = read_folder(Path(args.file), args.project)
    current = _current(args, desired, prune=True)  # what --prune would delete is always shown
    scope = {(k, d.project) for d in desired for k in KINDS}
    pruned = plan(desired, current, prune=True, pruned_scope=scope)
    deletes = [c for c in pruned if c.action == "delete"]
    return (pruned if args.prune else [c for c in pruned if c.action != "delete"]), deletes


def _print(changes: list[Change]) -> None:
    for ch in changes:
        print(ch.title())
        for line in ch.diff:
            sys.stdout.write("    " + line if line.endswith("\n") else "    " + line + "\n")


def _kept_note(deletes: list[Change]) -> str:
    names = ", ".join(f"{c.kind.name.lower()} {c.project}/{c.name}" for c in deletes[:10])
    more = f" and {len(deletes) - 10} more" if len(deletes) > 10 else ""
    return f"not in the folder, kept (--prune would delete them): {names}{more}"


def cmd_diff(args: argparse.Namespace) -> int:
    changes, deletes = _plan(args)
    _print(changes)
    if not changes:
        print("no changes")
    if deletes and not args.prune:
        print(_kept_note(deletes))
    return 1 if changes else 0


def _confirm(deletes: list[Change], stdin: TextIO, out: TextIO) -> bool | None:
    """Ask on a terminal whether to delete; None when stdin is not one (nobody to ask)."""
    if not stdin.isatty():
        return None
    out.write(f"apply --prune will delete {len(deletes)} object(s):\n")
    for ch in deletes:
        out.write(f"  {ch.title()}\n")
    out.write("Delete them? [y/N] ")
    out.flush()
    answer = stdin.readline(64)
    return answer.strip().lower() in ("y", "yes")


def cmd_apply(args: argparse.Namespace) -> int:
    changes, kept = _plan(args)
    if kept and not args.prune:
        print(_kept_note(kept))
    if not changes:
        print("no changes")
        return 0
    deletes_planned = [c for c in changes if c.action == "delete"]
    if deletes_planned and not args.dry_run and not args.yes:
        ok = _confirm(deletes_planned, sys.stdin, sys.stdout)
        if ok is None:
            for ch in deletes_planned:
                print(f"  {ch.title()}", file=sys.stderr)
            print(
                f"cronmesh: apply --prune would delete {len(deletes_planned)} object(s) (listed "
                "above) and stdin is not a terminal to ask: pass --yes to delete them, or "
                "review with `cronmesh diff --prune`; nothing was changed",
                file=sys.stderr,
            )
            return 2
        if not ok:
            print("nothing was changed")
            return 1
    # Calendars before jobs (schedules name them), jobs before workflows (workflows refer to
    # jobs); deletions last, in the reverse order.
    order = {"Calendar": -1, "Blackout": -1, "Job": 0, "Workflow": 1}
    writes = sorted(
        (c for c in changes if c.action != "delete"), key=lambda c: order.get(c.kind.name, 2)
    )
    deletes = sorted(
        (c for c in changes if c.action == "delete"), key=lambda c: -order.get(c.kind.name, 2)
    )
    for ch in [*writes, *deletes]:
        print(ch.title() + (" [dry run]" if args.dry_run else ""))
        if args.dry_run:
            continue
        path = f"{_base(ch.project, ch.kind)}/{urllib.parse.quote(ch.name)}"
        if ch.action == "delete":
            _call(args, "DELETE", path)
        else:
            warn_saved(_call(args, "PUT", path, ch.body), f"{ch.kind.name} {ch.project}/{ch.name}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    projects = _all(args, "/api/v1/projects", "projects") if args.all_projects else [args.project]
    objects: list[tuple[Kind, str, dict[str, Any]]] = []
    for project in projects:
        for kind in KINDS.values():
            for item in _list(args, kind, project) or []:
                objects.append((kind, project, item))
    root = Path(args.dir)
    for rel, text in export_files(objects).items():
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    print(f"exported {len(objects)} objects to {root}")
    return 0
