"""Sending a webhook without letting its URL reach inside the cluster (decisions in
``cluster/netguard.py``, D170/D171).

- The connection goes only to addresses that were checked: aiohttp's connector asks
  ``GuardedResolver`` for a name's addresses and connects to exactly the ones it answers, and the
  resolver answers only after every address passed the guard — there is no second lookup an
  attacker's DNS could answer differently (rebinding). Literal addresses, which aiohttp never
  resolves, are checked before each request.
- Redirects are followed by hand (307/308 only: they keep the POST), at most ``MAX_REDIRECTS``,
  each new location checked like the first.
- At most ``MAX_ANSWER_BYTES`` of any answer are read, all within one total timeout; the
  connection is then closed, never drained.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

import aiohttp
import structlog
from aiohttp.abc import AbstractResolver, ResolveResult

from cluster.errors import InvalidInput
from cluster.netguard import (
    FORBIDDEN_HEADERS,
    Guard,
    IPAddress,
    Refused,
    Target,
    WebhookSettings,
    check_header,
    check_secret_env,
    endpoint_hosts,
    internal_addresses,
    target,
)

if TYPE_CHECKING:
    from cluster.etcd import Etcd
    from cluster.keys import Keys
    from nodes.config import NodeConfig


class Node(Protocol):
    """What the guard reads of its node (the daemon's ``Node`` is one)."""

    etcd: Etcd
    keys: Keys
    config: NodeConfig


log = structlog.get_logger(__name__)

MAX_ANSWER_BYTES = 256
MAX_REDIRECTS = 3
WRITE_RESOLVE_TIMEOUT = 2.0
GUARD_TTL = 5.0

Lookup = Callable[[str, int], Awaitable[list[IPAddress]]]


async def system_lookup(host: str, port: int) -> list[IPAddress]:
    """The addresses the system resolver gives ``host`` (TCP)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    out: list[IPAddress] = []
    for _family, _, _, _, address in infos:
        ip = ipaddress.ip_address(str(address[0]).split("%", 1)[0])
        if ip not in out:
            out.append(ip)
    return out


# Tests replace this to play a DNS server that answers differently each time (rebinding).
LOOKUP: Lookup = system_lookup


class GuardedResolver(AbstractResolver):
    """Resolves, checks every address against the current guard, answers only checked ones."""

    def __init__(self, guard: Callable[[], Guard]) -> None:
        self._guard = guard

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        name = host.lower().rstrip(".")
        addresses = await LOOKUP(name, port)
        t = target(f"http://{name}:{port}/")
        checked = self._guard().check_addresses(t, addresses)
        return [
            ResolveResult(
                hostname=host,
                host=str(ip),
                port=port,
                family=socket.AF_INET6 if ip.version == 6 else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
            )
            for ip in checked
        ]

    async def close(self) -> None:
        return None


def guarded_session(guard: Callable[[], Guard]) -> aiohttp.ClientSession:
    """A client session whose connections can only reach what ``guard`` allows."""
    connector = aiohttp.TCPConnector(resolver=GuardedResolver(guard), use_dns_cache=False)
    return aiohttp.ClientSession(connector=connector, trust_env=False)


class WebhookFailed(RuntimeError):
    pass


def safe_headers(custom: Mapping[str, str]) -> dict[str, str]:
    """Custom headers minus any a check would refuse (stored before the checks existed)."""
    out: dict[str, str] = {}
    for name, value in custom.items():
        try:
            check_header(name, value)
        except Refused as exc:
            log.warning("webhook header dropped", error=str(exc))
            continue
        out[name] = value
    return out


async def post(
    http: aiohttp.ClientSession,
    guard: Guard,
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    seconds: float,
) -> int:
    """POST ``body`` to ``url`` (following 307/308), all within ``seconds``; the answer's status;
    raises on ≥ 300."""
    async with asyncio.timeout(seconds):
        for hop in range(MAX_REDIRECTS + 1):
            t = target(url)
            guard.check_name(t)
            async with http.post(
                url, data=body, headers=dict(headers), allow_redirects=False
            ) as resp:
                try:
                    if resp.status in (307, 308) and "Location" in resp.headers:
                        if hop == MAX_REDIRECTS:
                            raise WebhookFailed(f"more than {MAX_REDIRECTS} redirects")
                        url = urllib.parse.urljoin(url, resp.headers["Location"])
                        continue
                    if resp.status >= 300:
                        head = await resp.content.read(MAX_ANSWER_BYTES)
                        text = head.decode("utf-8", "replace")
                        raise WebhookFailed(f"webhook answered {resp.status}: {text}")
                    return resp.status
                finally:
                    resp.close()  # never drain what we did not read
    raise WebhookFailed("unreachable")  # pragma: no cover


class GuardSource:
    """The node's current guard: the allow-list setting, read at every refresh (one key: an
    entry a cluster admin removed is refused from the next send on, D371), and the cluster's
    own addresses, read again at most every ``GUARD_TTL`` seconds."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self._guard = Guard()
        self._at = -GUARD_TTL
        self._rev = -1  # the allow-list setting's mod revision in the guard

    def current(self) -> Guard:
        return self._guard

    async def refresh(self, *, force: bool = False) -> Guard:
        node = self.node
        kv = await node.etcd.get(node.keys.webhook_settings())
        rev = kv.mod_revision if kv else 0
        if not force and rev == self._rev and time.monotonic() - self._at < GUARD_TTL:
            return self._guard
        settings = WebhookSettings.model_validate_json(kv.value) if kv else WebhookSettings()
        infos = await node.etcd.range(node.keys.node_infos(), limit=1000)
        addresses = [node.config.advertise_address, *node.config.etcd]
        for info in infos.kvs:
            try:
                addresses.append(str(json.loads(info.value).get("address") or ""))
            except ValueError:
                continue
        hosts = endpoint_hosts(a for a in addresses if a)
        self._guard = Guard(
            allow=settings.entries(),
            internal=internal_addresses(hosts),
            internal_hosts=frozenset(hosts),
        )
        self._at, self._rev = time.monotonic(), rev
        return self._guard


async def check_urls(node: Node, urls: list[tuple[str, str]]) -> None:
    """Write-time check of ``(field, url)`` pairs: 400 naming the field of the first refused one.
    Names are resolved too, all at once within ``WRITE_RESOLVE_TIMEOUT`` in all; a name that does
    not resolve by then is accepted — the send checks again."""
    if not urls:
        return
    guard = await GuardSource(node).refresh(force=True)
    names: list[tuple[str, Target]] = []
    for fld, url in urls:
        try:
            t = target(url)
            guard.check_name(t)
        except Refused as exc:
            raise InvalidInput(f"{fld}: {exc}", field=fld) from None
        if t.literal is None and not guard.host_allowed(t.host, t.port):
            names.append((fld, t))
    if not names:
        return

    async def lookup(t: Target) -> list[IPAddress] | None:
        try:
            return await LOOKUP(t.host, t.port)
        except OSError:
            return None

    tasks = [asyncio.ensure_future(lookup(t)) for _, t in names]
    done, pending = await asyncio.wait(tasks, timeout=WRITE_RESOLVE_TIMEOUT)
    for task in pending:
        task.cancel()
    for (fld, t), task in zip(names, tasks, strict=True):
        if task not in done or task.result() is None:
            continue
        try:
            guard.check_addresses(t, task.result() or [])
        except Refused as exc:
            raise InvalidInput(f"{fld}: {exc}", field=fld) from None


def check_headers(rules_fields: list[tuple[str, Mapping[str, str]]]) -> None:
    for fld, headers in rules_fields:
        for name, value in headers.items():
            try:
                check_header(name, value)
            except Refused as exc:
                raise InvalidInput(f"{fld}.{name}: {exc}", field=f"{fld}.{name}") from None


def check_rule_docs(node: Node, rules: Any, base: str) -> Awaitable[None]:
    """Check raw notification rules (dicts as sent): headers now, URLs via ``check_urls``."""
    urls: list[tuple[str, str]] = []
    heads: list[tuple[str, Mapping[str, str]]] = []
    if isinstance(rules, list):
        for i, rule in enumerate(rules):
            hook = rule.get("webhook") if isinstance(rule, dict) else None
            if not isinstance(hook, dict):
                continue
            if isinstance(hook.get("url"), str):
                urls.append((f"{base}.{i}.webhook.url", hook["url"]))
            if isinstance(hook.get("secret_env"), str):
                try:
                    check_secret_env(hook["secret_env"])
                except Refused as exc:
                    fld = f"{base}.{i}.webhook.secret_env"
                    raise InvalidInput(f"{fld}: {exc}", field=fld) from None
            if isinstance(hook.get("headers"), dict):
                heads.append(
                    (
                        f"{base}.{i}.webhook.headers",
                        {str(k): str(v) for k, v in hook["headers"].items()},
                    )
                )
    check_headers(heads)
    return check_urls(node, urls)


__all__ = [
    "FORBIDDEN_HEADERS",
    "GuardSource",
    "GuardedResolver",
    "WebhookFailed",
    "check_rule_docs",
    "check_urls",
    "guarded_session",
    "post",
    "safe_headers",
]
