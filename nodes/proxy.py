"""Who the client is behind a trusted reverse proxy (``trusted_proxies``): pure functions.

Only a peer whose address lies in a configured CIDR may speak for the client: its
``X-Forwarded-For`` is read from the right, skipping further trusted hops, and the first address
that is not a trusted proxy is the client (anything left of it was written by the client and could
be forged). Its ``X-Forwarded-Proto`` says whether the client used TLS. Without a configured proxy
both headers are ignored, so nobody can pick their own address to dodge the per-address login
limit.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
MAX_HOPS = 32  # X-Forwarded-For entries looked at (bounded work per request)


def parse_networks(cidrs: Sequence[str]) -> tuple[Network, ...]:
    """The CIDRs (``10.0.0.0/8``, ``::1``) as networks; ValueError names a bad one."""
    out = []
    for cidr in cidrs:
        try:
            out.append(ipaddress.ip_network(cidr.strip(), strict=False))
        except ValueError:
            raise ValueError(f"trusted proxy {cidr!r} is not an address or CIDR") from None
    return tuple(out)


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # [v6]:port
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # v4:port
        text = text.split(":", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def trusted(address: str | None, networks: Sequence[Network]) -> bool:
    ip = _ip(address) if address else None
    return ip is not None and any(ip in net for net in networks)


def client_address(
    remote: str | None, forwarded_for: str | None, networks: Sequence[Network]
) -> str:
    """The client's address: ``remote``, or what trusted proxies say in ``X-Forwarded-For``."""
    here = remote or "unknown"
    if not networks or not forwarded_for or not trusted(remote, networks):
        return here
    hops = [h for h in forwarded_for.split(",") if h.strip()][-MAX_HOPS:]
    for hop in reversed(hops):
        ip = _ip(hop)
        if ip is None:
            return here  # a garbled header: keep the proxy's own address
        if not any(ip in net for net in networks):
            return str(ip)
        here = str(ip)
    return here


def forwarded_tls(
    remote: str | None, forwarded_proto: str | None, networks: Sequence[Network]
) -> bool | None:
    """True/False when a trusted proxy says the client used https/http; None: not told."""
    if not networks or not forwarded_proto or not trusted(remote, networks):
        return None
    proto = forwarded_proto.split(",")[0].strip().lower()
    return {"https": True, "http": False}.get(proto)
