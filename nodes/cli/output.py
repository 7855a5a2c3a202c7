"""How the CLI prints: a document as JSON or YAML, rows as an aligned table."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import yaml


def show(args: argparse.Namespace, data: Any) -> None:
    if args.output == "yaml":
        print(yaml.safe_dump(data, sort_keys=False), end="")
    else:
        print(json.dumps(data, indent=2))


def table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=False)]
    for row in [header, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=False)).rstrip())


def schedules_text(doc: dict[str, Any]) -> str:
    return "; ".join(s.get("cron") or str(s.get("at")) for s in doc["schedules"]) or "-"


def warn_saved(doc: Any, label: str) -> None:
    """The ``warnings`` of a saved job or workflow (DST, D223), on stderr."""
    for w in (doc.get("warnings") or []) if isinstance(doc, dict) else []:
        print(f"warning: {label} {w.get('field', '')}: {w.get('message', '')}", file=sys.stderr)
