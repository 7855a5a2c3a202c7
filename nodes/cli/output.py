"""How the CLI prints (D253): a list as an aligned table, one document as YAML, and with
``-o json|yaml`` the API's document in that format, for every command."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import yaml


def show(args: argparse.Namespace, data: Any) -> None:
    """A document: JSON with ``-o json``, else YAML (a document has no table form)."""
    if args.output == "json":
        print(json.dumps(data, indent=2))
    else:
        print(yaml.safe_dump(data, sort_keys=False), end="")


def table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=False)]
    for row in [header, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=False)).rstrip())


def schedules_text(doc: dict[str, Any]) -> str:
    return "; ".join(s.get("cron") or str(s.get("at")) for s in doc["schedules"]) or "-"


def waits_on_text(doc: dict[str, Any]) -> str:
    """The upstreams a job's or workflow's schedules wait on (``depends_on``), each once."""
    seen: list[str] = []
    for spec in doc.get("schedules") or []:
        for dep in spec.get("depends_on") or []:
            name = dep.get("job") or f"workflow:{dep.get('workflow')}"
            if name not in seen:
                seen.append(name)
    return ",".join(seen) or "-"


def warn_saved(doc: Any, label: str) -> None:
    """The ``warnings`` of a saved job or workflow (DST, D223), on stderr."""
    for w in (doc.get("warnings") or []) if isinstance(doc, dict) else []:
        print(f"warning: {label} {w.get('field', '')}: {w.get('message', '')}", file=sys.stderr)
