"""`cronmesh run logs ID [--follow] [--tail N] [--attempt N]`: print a run's log as it streams."""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.parse
import urllib.request


def add_log_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--attempt", type=int)
    parser.add_argument("-f", "--follow", action="store_true", help="stream until the run ends")
    parser.add_argument("--tail", type=int, help="only the last N lines")


def print_logs(args: argparse.Namespace, path: str) -> int:
    query: dict[str, str] = {}
    if args.attempt:
        query["attempt"] = str(args.attempt)
    if args.follow:
        query["follow"] = "1"
    if args.tail is not None:
        query["tail"] = str(args.tail)
    url = args.api.rstrip("/") + path + ("?" + urllib.parse.urlencode(query) if query else "")
    timeout = None if args.follow else 60
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            out = sys.stdout.buffer
            while chunk := resp.read1(64 * 1024):
                out.write(chunk)
                out.flush()
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read())["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = f"HTTP {exc.code}"
        print(f"cronmesh: {message}", file=sys.stderr)
        return 1
    except urllib.error.URLError as exc:
        print(f"cronmesh: cannot reach {args.api}: {exc.reason}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0
