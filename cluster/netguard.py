"""Where notifications may be sent: the pure decisions that stop webhooks from reaching inside.

A webhook URL is chosen by an editor, but the request is sent by the leader, from inside the
cluster's network: without a check, an editor reaches etcd's client port on loopback (and starts
a defragment), the nodes' own APIs, a cloud metadata service on a link-local address, or anything
on private networks. So a destination is refused unless every address it resolves to is a public
(globally routable) one, none of them is an etcd endpoint or a node, and the port is a plain one —
or a cluster admin allow-listed it (``settings/webhooks``: CIDRs, IPs or host names, each with an
optional ``:port``). The check runs when rules are written (with the answer naming the field) and
again when sending, on the addresses the connection then uses (``nodes/webhooks.py``), after
every redirect. No I/O here: callers resolve names and pass the addresses in.
"""

from __future__ import annotations

import ipaddress
import re
import urllib.parse
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field, field_validator

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_ALLOW = 64
# Hop-by-hop and framing headers (RFC 9110 7.6.1, RFC 9112) and the ones the notifier sets itself:
# a custom header may not change where the request goes or how its body is framed.
FORBIDDEN_HEADERS = frozenset(
    h.lower()
    for h in (
        "Host",
        "Content-Length",
        "Transfer-Encoding",
        "Connection",
        "Keep-Alive",
        "Proxy-Connection",
        "Proxy-Authorization",
        "Proxy-Authenticate",
        "TE",
        "Trailer",
        "Upgrade",
        "Expect",
        "Content-Type",
        "Content-Encoding",
        "X-Cronmesh-Signature",
        "X-Cronmesh-Timestamp",
        "X-Cronmesh-Delivery",
        "X-Cronmesh-Event",
    )
)
HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}$")
HOST_NAME = re.compile(
    r"^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$"
)
# Forms socket.inet_aton accepts besides dotted quads (127.1, 0x7f.1, 2130706433): never a name.
_NUMERIC_HOST = re.compile(r"^(0x[0-9a-f]+|[0-9]+)(\.(0x[0-9a-f]+|[0-9]+)){0,3}\.?$", re.I)
_LOCAL_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback")


class Refused(ValueError):
    """A destination the notifier must not connect to; the message says why."""


# The node's own settings and credentials (peer secret, admin token, etcd password, SMTP URL,
# the secrets key file): never a webhook's signing key, or an editor would get the node to
# sign chosen messages with them.
NODE_ENV_PREFIX = "CRONMESH_"


def check_secret_env(name: str) -> None:
    if name.upper().startswith(NODE_ENV_PREFIX):
        raise Refused(
            f"{name!r}: variables named {NODE_ENV_PREFIX}* are the node's own settings and "
            "credentials, not webhook keys"
        )


def check_header(name: str, value: str) -> None:
    """A custom webhook header: a token name that frames nothing, a value without line breaks."""
    if not HEADER_NAME.fullmatch(name):
        raise Refused(f"header name {name!r} is not a valid HTTP header name")
    if name.lower() in FORBIDDEN_HEADERS:
        raise Refused(f"header {name!r} cannot be set (the notifier sets or forbids it)")
    if any(c in value for c in "\r\n\0") or len(value) > 4096:
        raise Refused(f"header {name!r}: value must be one line of at most 4096 characters")


@dataclass(frozen=True, slots=True)
class Target:
    scheme: str
    host: str  # lower case, without brackets
    port: int
    literal: IPAddress | None  # the host when it is an address


def target(url: str) -> Target:
    """The destination of a webhook URL; refuses what cannot be checked (user info, odd hosts)."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise Refused(f"not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise Refused("only http:// and https:// URLs can receive notifications")
    host = (parts.hostname or "").lower().rstrip(".")
    if not host:
        raise Refused("the URL has no host")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise Refused("user info in the URL (user:password@) is not allowed; use headers")
    if port is None:
        port = 443 if parts.scheme == "https" else 80
    if port == 0:
        raise Refused("port 0 is not a destination")
    literal: IPAddress | None = None
    try:
        literal = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        if _NUMERIC_HOST.fullmatch(host):
            raise Refused(f"{host!r} is not a canonical IP address") from None
        if not HOST_NAME.fullmatch(host) or host.startswith("*."):
            raise Refused(f"{host!r} is not a valid host name") from None
    return Target(parts.scheme, host, port, literal)


def _unmapped(ip: IPAddress) -> IPAddress:
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip.sixtofour is not None:
            return ip.sixtofour
        if ip.teredo is not None:
            return ip.teredo[1]
        if ip in _NAT64:
            return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def is_public(ip: IPAddress) -> bool:
    """Globally routable unicast: not loopback, private, link-local, shared, reserved, multicast."""
    ip = _unmapped(ip)
    return bool(ip.is_global) and not ip.is_multicast


class AllowEntry(BaseModel):
    """One allow-list entry, parsed."""

    model_config = ConfigDict(frozen=True)
    network: IPNetwork | None = None
    host: str | None = None  # exact name, or "*.suffix"
    port: int | None = None

    def matches_host(self, host: str) -> bool:
        if self.host is None:
            return False
        if self.host.startswith("*."):
            return host.endswith(self.host[1:])
        return host == self.host

    def port_ok(self, port: int) -> bool:
        return self.port is None or self.port == port


def parse_entry(text: str) -> AllowEntry:
    """``10.0.0.0/8``, ``127.0.0.1:8080``, ``[::1]:9000``, ``hooks.internal``, ``*.corp:443``."""
    raw = text.strip().lower()
    port: int | None = None
    body = raw
    if raw.startswith("["):
        inner, closed, rest = raw[1:].partition("]")
        if not closed:
            raise ValueError(f"{text!r}: expected [address] or [address]:port")
        body = inner
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"{text!r}: expected [address]:port")
            port = _port(rest[1:], text)
    elif raw.count(":") == 1:
        body, _, p = raw.partition(":")
        port = _port(p, text)
    if not body:
        raise ValueError(f"{text!r}: empty entry")
    try:
        return AllowEntry(network=ipaddress.ip_network(body, strict=False), port=port)
    except ValueError:
        pass
    if _NUMERIC_HOST.fullmatch(body) or not HOST_NAME.fullmatch(body):
        raise ValueError(f"{text!r} is neither a CIDR, an IP address nor a host name")
    return AllowEntry(host=body, port=port)


def _port(raw: str, text: str) -> int:
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise ValueError(f"{text!r}: port must be 1..65535")
    return int(raw)


class WebhookSettings(BaseModel):
    """Cluster setting (``PUT /api/v1/settings/webhooks``, cluster admin)."""

    model_config = ConfigDict(extra="forbid")
    allow: list[str] = Field(
        default_factory=list,
        max_length=MAX_ALLOW,
        description="CIDRs, IP addresses or host names (``*.suffix``), each with an optional "
        "``:port``, that webhooks may reach although they are not public addresses",
    )

    @field_validator("allow")
    @classmethod
    def _entries(cls, value: list[str]) -> list[str]:
        for i, entry in enumerate(value):
            if len(entry) > 256:
                raise ValueError(f"entry {i} is longer than 256 characters")
            parse_entry(entry)
        return value

    def entries(self) -> list[AllowEntry]:
        return [parse_entry(e) for e in self.allow]


@dataclass(frozen=True, slots=True)
class Guard:
    """Everything needed to judge a destination: the allow-list and the cluster's own addresses
    (etcd endpoints and nodes; refused even when public, unless allow-listed)."""

    allow: Sequence[AllowEntry] = ()
    internal: frozenset[IPAddress] = field(default_factory=frozenset)
    internal_hosts: frozenset[str] = field(default_factory=frozenset)

    def host_allowed(self, host: str, port: int) -> bool:
        """An allow-listed host *name*: its addresses are trusted whatever they are."""
        return any(e.matches_host(host) and e.port_ok(port) for e in self.allow)

    def check_address(self, host: str, ip: IPAddress, port: int) -> None:
        """Refuse connecting to ``ip`` (which ``host`` resolved to, or is) on ``port``."""
        if self.host_allowed(host, port):
            return
        plain = _unmapped(ip)
        for e in self.allow:
            if e.network is not None and e.port_ok(port):
                if plain.version == e.network.version and plain in e.network:
                    return
        if plain in self.internal or ip in self.internal:
            raise Refused(f"{host} ({ip}) is an etcd endpoint or a cronmesh node")
        if not is_public(ip):
            raise Refused(
                f"{host} ({ip}) is not a public address (loopback, private, link-local or "
                "reserved); a cluster admin can allow-list it (settings/webhooks)"
            )

    def check_addresses(self, t: Target, addresses: Iterable[IPAddress]) -> list[IPAddress]:
        """All of them must pass (a name that also resolves inside is refused as a whole)."""
        out = list(addresses)
        if not out:
            raise Refused(f"{t.host} has no address")
        for ip in out:
            self.check_address(t.host, ip, t.port)
        return out

    def check_name(self, t: Target) -> None:
        """What can be decided without resolving: literal addresses, local and cluster names."""
        if t.literal is not None:
            self.check_address(t.host, t.literal, t.port)
            return
        if self.host_allowed(t.host, t.port):
            return
        if t.host in _LOCAL_NAMES or t.host.endswith(".localhost"):
            raise Refused(f"{t.host} is this machine; a cluster admin can allow-list it")
        if t.host in self.internal_hosts:
            raise Refused(f"{t.host} is an etcd endpoint or a cronmesh node")


def endpoint_hosts(urls: Iterable[str]) -> set[str]:
    """The host part of etcd endpoints and node addresses (``host:port`` or URLs)."""
    hosts: set[str] = set()
    for raw in urls:
        text = raw if "://" in raw else f"http://{raw}"
        try:
            host = urllib.parse.urlsplit(text).hostname
        except ValueError:
            continue
        if host:
            hosts.add(host.lower())
    return hosts


def internal_addresses(hosts: Iterable[str]) -> frozenset[IPAddress]:
    out: set[IPAddress] = set()
    for h in hosts:
        try:
            out.add(ipaddress.ip_address(h))
        except ValueError:
            continue
    return frozenset(out)
