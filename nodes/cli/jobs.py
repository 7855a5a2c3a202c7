"""``cronmesh job``, ``cronmesh run`` and ``cronmesh status``."""

from __future__ import annotations

import argparse
import sys
import urllib.parse

from nodes.cli import logs as cli_logs
from nodes.cli.client import ApiError, call, call_all, proj
from nodes.cli.documents import apply_documents, params
from nodes.cli.output import schedules_text, show, table, waits_on_text, warn_saved
from nodes.cli.termsafe import strip_controls


def cmd_job(args: argparse.Namespace) -> int:
    base = proj(args)
    if args.action == "apply":
        for job in apply_documents(args, "job"):
            print(f"job {args.project}/{job['name']} applied")
            warn_saved(job, f"job {args.project}/{job['name']}")
    elif args.action == "list":
        jobs = call_all(args, f"{base}/jobs", "jobs")
        if args.output == "table":
            table(
                [
                    [
                        j["name"],
                        "yes" if j["enabled"] else "no",
                        schedules_text(j),
                        waits_on_text(j),
                        ",".join(j["tags"]),
                    ]
                    for j in jobs
                ],
                ["NAME", "ENABLED", "SCHEDULES", "WAITS ON", "TAGS"],
            )
        else:
            show(args, jobs)
    elif args.action == "get":
        show(args, call(args, "GET", f"{base}/jobs/{args.name}"))
    elif args.action == "delete":
        call(args, "DELETE", f"{base}/jobs/{args.name}")
        print(f"job {args.project}/{args.name} deleted")
    elif args.action in ("enable", "disable"):
        call(args, "PATCH", f"{base}/jobs/{args.name}", {"enabled": args.action == "enable"})
        print(f"job {args.project}/{args.name} {args.action}d")
    elif args.action == "trigger":
        run = call(
            args, "POST", f"{base}/jobs/{args.name}/runs", {"parameters": params(args.param)}
        )
        warn_saved(run, f"job {args.project}/{args.name}")
        if args.output == "table":
            print(run["id"])
        else:
            show(args, run)
    elif args.action == "ticks":
        show(args, call(args, "GET", f"{base}/jobs/{args.name}/ticks"))
    elif args.action == "slots":
        page = call(args, "GET", slots_path(f"{base}/jobs/{args.name}/slots", args))
        if args.output == "table":
            table([slot_row(s) for s in page["slots"]], ["SLOT", "OUTCOME", "RUN", "REASON"])
            more_slots(page)
        else:
            show(args, page)
    elif args.action == "backfill":
        body = {"from": args.start, "to": args.end}
        show(args, call(args, "POST", f"{base}/jobs/{args.name}/backfill", body))
    return 0


def add_slot_paging(parser: argparse.ArgumentParser) -> None:
    """``--limit``/``--before`` of ``job slots`` and ``workflow slots`` (the API pages them)."""
    parser.add_argument("--limit", type=int, help="at most this many slots (default 50, ≤ 1000)")
    parser.add_argument("--before", help="slots older than this one (the NAME a page ends with)")


def slots_path(path: str, args: argparse.Namespace) -> str:
    query = {k: v for k, v in (("limit", args.limit), ("before", args.before)) if v is not None}
    return f"{path}?{urllib.parse.urlencode(query)}" if query else path


def more_slots(page: dict[str, object]) -> None:
    if page.get("next"):  # to stderr: the table stays a table for scripts
        print(f"older slots: --before {page['next']}", file=sys.stderr)


def slot_row(slot: dict[str, object]) -> list[str]:
    """A slot as a table row; a waiting slot's reason says what it waits for (D295)."""
    reason = str(slot.get("reason") or "")
    waiting = slot.get("waiting_for")
    if isinstance(waiting, dict):
        parts = []
        for dep in waiting.get("depends_on") or []:
            counts = dep.get("slots") or {}
            done = (
                "met"
                if dep.get("met")
                else (f"{counts.get('pending', 0)} pending, {counts.get('failed', 0)} failed")
            )
            if dep.get("blocked") and not dep.get("met"):
                done += ", rerun a failed one to release"
            parts.append(f"{dep.get('upstream')} {dep.get('require')}: {done}")
        if waiting.get("not_before") and not waiting.get("gate_passed"):
            parts.append(f"not before {waiting['not_before']}")
        reason = "waiting: " + ("; ".join(parts) or "its time gate")
    outcome = slot.get("outcome") or ("waiting" if slot.get("waiting") else "open")
    cells = [slot.get("tick"), outcome, slot.get("run") or "-", reason]
    return [strip_controls(str(c)) for c in cells]


def cmd_run(args: argparse.Namespace) -> int:
    base = proj(args)
    if args.action == "list":
        query = {
            k: v
            for k, v in (("job", args.job), ("status", args.status), ("limit", args.limit))
            if v
        }
        runs = call(args, "GET", f"{base}/runs?{urllib.parse.urlencode(query)}")["runs"]
        if args.output == "table":
            table(
                [
                    [
                        r["id"],
                        r["job"],
                        "waiting" if r.get("waiting") else r["status"],  # held back (D320)
                        str(r["attempt"]),
                        r["node"] or "-",
                        r["scheduled_at"] or "-",
                        r["source"],
                        "-" if r["exit_code"] is None else str(r["exit_code"]),
                    ]
                    for r in runs
                ],
                ["ID", "JOB", "STATUS", "ATTEMPT", "NODE", "SCHEDULED", "SOURCE", "EXIT"],
            )
        else:
            show(args, runs)
    elif args.action == "get":
        show(args, call(args, "GET", f"{base}/runs/{args.id}"))
    elif args.action == "logs":
        return cli_logs.print_logs(args, f"{base}/runs/{args.id}/logs")
    elif args.action == "rerun":
        run = call(args, "POST", f"{base}/runs/{args.id}/rerun")
        if args.output == "table":
            print(run["id"])
        else:
            show(args, run)
    elif args.action in ("cancel", "abort"):
        call(args, "POST", f"{base}/runs/{args.id}/{args.action}")
        print(f"run {args.id}: {args.action} requested")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    try:
        data = call(args, "GET", "/status")
    except ApiError as exc:
        if exc.status != 503:
            raise
        data = exc.body
    if args.output == "table":
        print(f"node {data['node']['id']}  leader: {data['leader']}  queue: {data['queue_depth']}")
        shards = data.get("shards") or {}
        if shards.get("shards", 1) > 1:  # who leads which scheduler shard (D303)
            led = shards.get("leaders") or {}
            text = "  ".join(f"{i}:{led[i] or '-'}" for i in sorted(led, key=int))
            print("shards: " + strip_controls(text))
        if data.get("freeze"):  # D239
            print("CLUSTER FROZEN: " + strip_controls(str(data["freeze"].get("note"))))
        held = data["node"].get("containment")
        if held:  # how this node contains its runs (D150)
            limits = ",".join(sorted(held.get("limits") or {})) or "none"
            print(f"runs contained by: {held['mode']} (kill: {held['kill']}, limits: {limits})")
        table(
            [
                [n["id"], "up" if n["up"] else "down", n.get("address", "-"), n.get("version", "-")]
                for n in data["nodes"]
            ],
            ["NODE", "STATE", "ADDRESS", "VERSION"],
        )
    else:
        show(args, data)
    return 0
