"""The SSRF guard's rules: which hosts http_get may name and which addresses it may reach.

Pure functions, so every rule is tested without a network. A host must be on the allowlist AND
every address it resolves to must be public: an allowlisted name can still point into the
private network (by mistake, or a DNS record an attacker controls), and a literal address is
checked the same way whether or not it is listed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Sequence

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]

# Cloud metadata services by name; their addresses (169.254.169.254, fd00:ec2::254) are
# link-local or unique-local and refused by address too.
BLOCKED_NAMES = frozenset(
    {
        "localhost",
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "metadata.azure.com",
        "metadata.azure.internal",
        "instance-data",
        "instance-data.ec2.internal",
        "metadata.packet.net",
        "metadata.platformequinix.com",
        "metadata.tencentyun.com",
    }
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052: a public IPv4 address seen over IPv6
_SHARED = ipaddress.ip_network("100.64.0.0/10")  # RFC 6598 carrier-grade NAT


def normalise_host(host: str) -> str:
    """Lower case, without the root label's dot: `Example.COM.` and `example.com` are one host."""
    return host.strip().lower().rstrip(".")


def blocked_name(host: str) -> str | None:
    """Why `host` (normalised) is refused by name alone, or None."""
    if host in BLOCKED_NAMES or host.endswith(".localhost"):
        return f"{host} is an internal name"
    return None


def on_allowlist(host: str, allowlist: Sequence[str]) -> bool:
    """Whether `host` is listed exactly, or under a `*.suffix` entry (which does not cover `suffix`)."""
    for raw in allowlist:
        entry = normalise_host(raw)
        if entry.startswith("*."):
            if host.endswith(entry[1:]) and len(host) > len(entry) - 1:
                return True
        elif entry and host == entry:
            return True
    return False


def literal_address(host: str) -> IPAddress | None:
    """`host` as an IP address if it is written as one (IPv6 without brackets), else None."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def unsafe_address(ip: IPAddress) -> str | None:
    """Why connecting to `ip` is refused, or None for a public unicast address.

    Addresses that carry an IPv4 address inside IPv6 (IPv4-mapped `::ffff:a.b.c.d`, NAT64, 6to4)
    are judged by the IPv4 address they lead to.
    """
    embedded = _embedded_ipv4(ip)
    if embedded is not None:
        reason = unsafe_address(embedded)
        return f"{reason} (as {ip})" if reason else None
    kinds = (
        (ip.is_unspecified, "unspecified"),
        (ip.is_loopback, "loopback"),
        (ip.is_link_local, "link-local"),
        # Deprecated (RFC 3879) but still routed inside some networks; Python counts it global.
        (isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local, "site-local"),
        (ip.is_multicast, "multicast"),
        (isinstance(ip, ipaddress.IPv4Address) and ip in _SHARED, "shared (carrier-grade NAT)"),
        (ip.is_reserved, "reserved"),
        (ip.is_private, "private"),
        (not ip.is_global, "non-public"),
    )
    for refused, kind in kinds:
        if refused:
            return f"{kind} address {ip}"
    return None


def _embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


async def system_resolver(host: str, port: int) -> list[str]:
    """The host's addresses from the system resolver, in its order of preference, without repeats."""
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    return list(dict.fromkeys(str(info[4][0]) for info in infos))
