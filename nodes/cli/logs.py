"""`cronmesh run logs ID [--follow] [--tail N] [--attempt N] [--raw]`: print a run's log as it
streams (on a terminal without the job's control sequences, unless ``--raw``)."""

from __future__ import annotations

import argparse
import sys
import urllib.error
import urllib.parse
import urllib.request

from nodes.cli import credentials
from nodes.cli.client import check_api, refusal, unreachable
from nodes.cli.termsafe import TerminalFilter

READ_TIMEOUT = 60.0  # s for a stored log's answer (a followed one waits as long as the run)


def add_log_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--attempt", type=int, help="this attempt's output (default: the last)")
    parser.add_argument("-f", "--follow", action="store_true", help="stream until the run ends")
    parser.add_argument("--tail", type=int, help="only the last N lines")
    parser.add_argument(
        "--raw",
        action="store_true",
        help="write terminal control sequences as the job wrote them (by default they are "
        "removed when the output is a terminal)",
    )


def output_filter(args: argparse.Namespace, isatty: bool) -> TerminalFilter | None:
    """The filter the output goes through: control sequences removed on a terminal unless
    ``--raw`` (a job's output must not drive the reader's terminal); none when piped."""
    return TerminalFilter() if isatty and not getattr(args, "raw", False) else None


def print_logs(args: argparse.Namespace, path: str) -> int:
    query: dict[str, str] = {}
    if args.attempt:
        query["attempt"] = str(args.attempt)
    if args.follow:
        query["follow"] = "1"
    if args.tail is not None:
        query["tail"] = str(args.tail)
    check_api(args)
    url = args.api.rstrip("/") + path + ("?" + urllib.parse.urlencode(query) if query else "")
    timeout = None if args.follow else READ_TIMEOUT
    req = urllib.request.Request(url)
    token = credentials.token_for(args)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            out = sys.stdout.buffer
            safe = output_filter(args, sys.stdout.isatty())
            while chunk := resp.read1(64 * 1024):
                out.write(safe.feed(chunk) if safe is not None else chunk)
                out.flush()
            if safe is not None:
                out.write(safe.flush())
                out.flush()
    except urllib.error.HTTPError as exc:  # the same words as every other command's (D509)
        print(refusal(args, path, exc, token).describe(), file=sys.stderr)
        return 1
    except urllib.error.URLError as exc:
        print(f"cronmesh: {unreachable(args.api, exc.reason)}", file=sys.stderr)
        return 1
    except OSError as exc:  # no answer in time, or the stream dropped mid-answer (D509)
        reason = (
            f"no answer within {timeout} s" if isinstance(exc, TimeoutError) and timeout else exc
        )
        print(f"cronmesh: {unreachable(args.api, reason)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0
