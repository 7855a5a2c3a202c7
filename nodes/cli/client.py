"""The CLI's HTTP client of the API: one call, a paged listing, the error an answer carries."""

from __future__ import annotations

import argparse
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from nodes.cli.credentials import token_for

# Seconds the CLI waits for an API answer.
TIMEOUT = 30.0


class ApiError(Exception):
    def __init__(self, status: int, body: Any) -> None:
        self.status = status
        self.body = body
        err = body.get("error", {}) if isinstance(body, dict) else {}
        super().__init__(err.get("message") or str(body))

    def describe(self) -> str:
        """What the command line prints for it (the one error mapping, D215)."""
        err = self.body.get("error", {}) if isinstance(self.body, dict) else {}
        field = f" (field: {err['field']})" if err.get("field") else ""
        return f"cronmesh: {self}{field}"


def unreachable(api: str, reason: object) -> str:
    """What to say when no API answers at ``api``: where we tried and what to do (D254)."""
    return (
        f"cannot reach the cronmesh API at {api} ({reason}): is a node running there? "
        "For a local cluster start `cronmesh dev` (it may not be running); else point --api "
        "or CRONMESH_API at a node"
    )


def _is_error_body(body: Any) -> bool:
    return isinstance(body, dict) and isinstance(body.get("error"), dict)


def not_cronmesh(api: str, status: int) -> str:
    """What to say when the answer is not cronmesh's (another server listens there, D509)."""
    return (
        f"{api} answered HTTP {status} with something other than cronmesh's JSON: it does not"
        " look like a cronmesh node's API; check --api or CRONMESH_API (a node listens on its"
        " --listen address, 8080 by default)"
    )


def relogin_hint(args: argparse.Namespace) -> str:
    """How to get a token that works, by where the refused one came from (D509)."""
    if getattr(args, "token", None):
        return "the --token given was refused: create a live one (`cronmesh token create`)"
    if os.environ.get("CRONMESH_TOKEN"):
        return "CRONMESH_TOKEN was refused; unset it or set a live token"
    return f"the stored login has expired or was revoked: run `cronmesh login --api {args.api}`"


def call_all(args: argparse.Namespace, path: str, key: str) -> list[Any]:
    """Every item of a paged listing (``?after=&limit=``, answers carry ``next``)."""
    items: list[Any] = []
    after: str | None = None
    sep = "&" if "?" in path else "?"
    for _ in range(100_000):  # bounded: each page moves ``after`` forward
        query = {"limit": "1000", **({"after": after} if after else {})}
        data = call(args, "GET", f"{path}{sep}{urllib.parse.urlencode(query)}")
        items += data.get(key, [])
        after = data.get("next")
        if not after:
            break
    return items


def check_api(args: argparse.Namespace) -> None:
    """Refuse an ``--api`` without its scheme, which urllib calls an "unknown url type" (D509)."""
    if not args.api.startswith(("http://", "https://")):
        raise ApiError(
            0,
            {
                "error": {
                    "message": f"--api {args.api!r} is not a URL: give the scheme, such as"
                    f" http://{args.api.split('://')[-1] or '127.0.0.1:8080'}"
                }
            },
        )


def refusal(
    args: argparse.Namespace, path: str, exc: urllib.error.HTTPError, token: str | None
) -> ApiError:
    """The error to show for an HTTP error answer: cronmesh's own message, with how to log in
    again when a token was refused or none was given, or a word that another server answered."""
    payload = exc.read()
    try:
        parsed = json.loads(payload)
    except ValueError:
        parsed = payload.decode(errors="replace")
    if not _is_error_body(parsed):
        parsed = {"error": {"message": not_cronmesh(args.api, exc.code)}}
    elif exc.code == 401 and token and path != "/api/v1/auth/login":
        parsed["error"]["message"] += f": {relogin_hint(args)}"
    if exc.code == 401 and not token and path != "/api/v1/auth/login":
        parsed = {
            "error": {
                # a token is kept per API address: name the one asked (D335)
                "message": f"not logged in to {args.api} (a login is kept per API address):"
                f" run `cronmesh login --api {args.api}`, or give --token / CRONMESH_TOKEN"
            }
        }
    return ApiError(exc.code, parsed)


def call(
    args: argparse.Namespace, method: str, path: str, body: Any = None, raw: bool = False
) -> Any:
    check_api(args)
    url = args.api.rstrip("/") + path
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    token = token_for(args)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:
            payload, status = resp.read(), resp.status
    except urllib.error.HTTPError as exc:
        raise refusal(args, path, exc, token) from None
    except urllib.error.URLError as exc:
        raise ApiError(0, {"error": {"message": unreachable(args.api, exc.reason)}}) from None
    except OSError as exc:  # no answer in time, or the connection dropped mid-answer (D509)
        reason = f"no answer within {TIMEOUT:g} s" if isinstance(exc, TimeoutError) else exc
        raise ApiError(0, {"error": {"message": unreachable(args.api, reason)}}) from None
    if raw:
        return payload.decode(errors="replace")
    try:
        return json.loads(payload) if payload else None
    except ValueError:  # a web page where a node's API was expected
        raise ApiError(0, {"error": {"message": not_cronmesh(args.api, status)}}) from None


def proj(args: argparse.Namespace) -> str:
    return f"/api/v1/projects/{urllib.parse.quote(args.project)}"
