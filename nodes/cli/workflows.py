"""``cronmesh workflow …`` and ``cronmesh execution …`` (docs/workflows.md)."""

from __future__ import annotations

import argparse
import urllib.parse
from typing import Any

from nodes.cli.client import call, call_all, proj
from nodes.cli.documents import apply_documents, params
from nodes.cli.jobs import add_slot_paging, more_slots, slot_row, slots_path
from nodes.cli.output import schedules_text, show, table, waits_on_text, warn_saved


def _q(name: str) -> str:
    return urllib.parse.quote(name, safe="")


def cmd_workflow(args: argparse.Namespace) -> int:
    base = proj(args)
    if args.action == "apply":
        for wf in apply_documents(args, "workflow"):
            print(f"workflow {args.project}/{wf['name']} applied ({len(wf['tasks'])} tasks)")
            warn_saved(wf, f"workflow {args.project}/{wf['name']}")
    elif args.action == "list":
        wfs = call_all(args, f"{base}/workflows", "workflows")
        if args.output == "table":
            table(
                [
                    [
                        w["name"],
                        str(len(w["tasks"])),
                        "yes" if w["enabled"] else "no",
                        schedules_text(w),
                        waits_on_text(w),
                        str(w["priority"]),
                        str(w["max_active"] or "-"),
                    ]
                    for w in wfs
                ],
                ["NAME", "TASKS", "ENABLED", "SCHEDULES", "WAITS ON", "PRIORITY", "MAX_ACTIVE"],
            )
        else:
            show(args, wfs)
    elif args.action == "get":
        show(args, call(args, "GET", f"{base}/workflows/{_q(args.name)}"))
    elif args.action == "delete":
        call(args, "DELETE", f"{base}/workflows/{_q(args.name)}")
        print(f"workflow {args.project}/{args.name} deleted")
    elif args.action == "trigger":
        ex = call(
            args,
            "POST",
            f"{base}/workflows/{_q(args.name)}/executions",
            {"parameters": params(args.param)},
        )
        warn_saved(ex, f"workflow {args.project}/{args.name}")
        if args.output == "table":
            print(ex["id"])
        else:
            show(args, ex)
    elif args.action == "slots":  # as `job slots`: a waiting slot says what it waits for
        page = call(args, "GET", slots_path(f"{base}/workflows/{_q(args.name)}/slots", args))
        if args.output == "table":
            rows = [slot_row({**s, "run": s.get("execution")}) for s in page["slots"]]
            table(rows, ["SLOT", "OUTCOME", "EXECUTION", "REASON"])
            more_slots(page)
        else:
            show(args, page)
    elif args.action == "executions":
        path = f"{base}/workflows/{_q(args.name)}/executions" if args.name else f"{base}/executions"
        show_executions(args, call(args, "GET", path)["executions"])
    return 0


def show_executions(args: argparse.Namespace, execs: list[dict[str, Any]]) -> None:
    if args.output != "table":
        show(args, execs)
        return
    rows = []
    for e in execs:
        states = list(e["tasks"].values())
        done = sum(1 for s in states if s == "succeeded")
        rows.append(
            [
                e["id"],
                e["workflow"],
                e["status"],
                f"{done}/{len(states)}",
                e["source"],
                e["created_at"],
            ]
        )
    table(rows, ["ID", "WORKFLOW", "STATUS", "SUCCEEDED", "SOURCE", "CREATED"])


def cmd_execution(args: argparse.Namespace) -> int:
    base = f"{proj(args)}/executions"
    if args.action == "list":
        show_executions(args, call(args, "GET", base)["executions"])
    elif args.action == "get":
        ex = call(args, "GET", f"{base}/{args.id}")
        if args.output != "table":
            show(args, ex)
            return 0
        print(f"execution {ex['id']} of {ex['workflow']}: {ex['status']}")
        table(
            [
                [
                    name,
                    t["status"],
                    str(t["attempt"] or "-"),
                    t["node"] or "-",
                    "-" if t["exit_code"] is None else str(t["exit_code"]),
                    t["run_id"] or t["report_key"] or "-",
                    (t["error"] or "")[:60],
                ]
                for name, t in ex["tasks"].items()
            ],
            ["TASK", "STATUS", "ATTEMPT", "NODE", "EXIT", "RUN", "ERROR"],
        )
    elif args.action == "rerun":
        body: dict[str, Any] = {}
        if args.from_task:
            body["from_task"] = args.from_task
        if args.failed_only:
            body["failed_only"] = True
        call(args, "POST", f"{base}/{args.id}/rerun", body)
        print(f"execution {args.id}: rerun requested")
    elif args.action == "cancel":
        call(args, "POST", f"{base}/{args.id}/cancel", {})
        print(f"execution {args.id}: cancel requested")
    elif args.action == "report":
        body = {"status": args.status}
        if args.result is not None:
            import json

            body["result"] = json.loads(args.result)
        call(args, "POST", f"{base}/report/{_q(args.key)}", body)
        print(f"reported {args.status} for {args.key}")
    return 0


def add_parsers(sub: Any) -> None:
    """Hooked into ``nodes.cli.build_parser``."""
    w = sub.add_parser("workflow", help="manage workflows (DAGs of tasks)").add_subparsers(
        dest="action", required=True
    )
    ap = w.add_parser("apply", help="create or update workflows from a YAML/JSON file")
    ap.add_argument("-f", "--file", required=True, help="YAML/JSON file (- for stdin)")
    w.add_parser("list", help="the project's workflows (a table)")
    w.add_parser("get", help="one workflow's document").add_argument("name", help="workflow name")
    w.add_parser("delete", help="delete a workflow").add_argument("name", help="workflow name")
    tr = w.add_parser("trigger", help="start an execution now (prints its id)")
    tr.add_argument("name", help="workflow name")
    tr.add_argument(
        "--param", action="append", help="NAME=VALUE, a parameter of this execution (repeatable)"
    )
    slots = w.add_parser(
        "slots", help="recent slots' outcomes; a waiting slot names the upstream slots it waits for"
    )
    slots.add_argument("name", help="workflow name")
    add_slot_paging(slots)
    ex = w.add_parser("executions", help="list executions (of one workflow, or all)")
    ex.add_argument("name", nargs="?", help="workflow name (default: every workflow)")
    for parser in w.choices.values():
        parser.set_defaults(func=cmd_workflow)

    e = sub.add_parser("execution", help="inspect and control workflow executions")
    es = e.add_subparsers(dest="action", required=True)
    es.add_parser("list", help="the project's executions, newest first (a table)")
    es.add_parser("get", help="an execution: per task status, node, exit, run").add_argument(
        "id", help="execution id"
    )
    es.add_parser("cancel", help="cancel an execution and its running tasks").add_argument(
        "id", help="execution id"
    )
    rr = es.add_parser("rerun", help="rerun from a task, or the failed tasks")
    rr.add_argument("id", help="execution id")
    group = rr.add_mutually_exclusive_group(required=True)
    group.add_argument("--from-task", help="rerun this task and everything downstream of it")
    group.add_argument("--failed-only", action="store_true", help="rerun the failed tasks only")
    rp = es.add_parser("report", help="complete an external task by its report key")
    rp.add_argument("key", help="the task's report key")
    rp.add_argument(
        "--status",
        choices=["succeeded", "failed"],
        default="succeeded",
        help="the task's outcome (default succeeded)",
    )
    rp.add_argument("--result", help="JSON result passed downstream")
    for parser in es.choices.values():
        parser.set_defaults(func=cmd_execution)
