"""Where the gateway may connect: a name that resolves to a private, loopback, link-local (cloud metadata) or other
special address is refused unless the configuration says so (``network.private_hosts`` by name,
``network.private_ranges`` by CIDR). An IP address written in the configuration is explicit and always allowed.

This stops a DNS answer — a rebinding attack, a poisoned record, a hostname that used to be public — from turning
the gateway's own requests (to identity providers, key sets, upstreams, webhooks, audit exports) into requests to
the inside of its network. The check runs on the addresses actually connected to: aiohttp's resolver for the
shared client session and the webhook notifier, the gateway's own HTTP/1.1 client for http:// upstreams, and the
audit exporters before each delivery.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from typing import Any

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

SPECIAL: tuple[IPNetwork, ...] = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",  # link-local: cloud metadata services live here
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "224.0.0.0/3",  # multicast and reserved
        "::/127",
        "fc00::/7",
        "fe80::/10",
        "ff00::/8",
        "64:ff9b::/96",
    )
)


class RefusedAddress(OSError):
    """A name resolved to an address the configuration does not allow."""


def why_unreachable(exc: BaseException) -> str:
    """What a caller is told about a failed connection: the guard's refusal by name (never the address), else the
    exception's type."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            break
        if isinstance(seen, RefusedAddress):
            return "its name resolves to a private or special address: see network.private_hosts"
        seen = getattr(seen, "os_error", None) or seen.__cause__
    return type(exc).__name__


def is_special(ip: IPAddress) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in n for n in SPECIAL if n.version == ip.version)


def _literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


class NetGuard:
    def __init__(self, private_hosts: Iterable[str] = (), private_ranges: Iterable[str] = ()) -> None:
        self.hosts = frozenset(h.lower().rstrip(".") for h in private_hosts)
        self.ranges = tuple(ipaddress.ip_network(r, strict=False) for r in private_ranges)

    def allowed(self, host: str, address: str) -> bool:
        if _literal(host):
            return True  # written in the configuration: explicit
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if not is_special(ip):
            return True
        name = host.lower().rstrip(".")
        if name in self.hosts:
            return True
        if (name == "localhost" or name.endswith(".localhost")) and ip.is_loopback:
            return True  # RFC 6761: localhost is loopback by definition, not by anyone's DNS
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None and ip.ipv4_mapped.is_loopback:
            return name == "localhost" or name.endswith(".localhost") or any(ip.ipv4_mapped in r for r in self.ranges)
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in r for r in self.ranges if r.version == ip.version)

    def refusal(self, host: str, address: str) -> RefusedAddress:
        return RefusedAddress(
            f"{host} resolves to {address}, a private or special address: allow it with network.private_hosts "
            "or network.private_ranges"
        )

    def check(self, host: str, addresses: Iterable[str]) -> list[str]:
        """The allowed ones of ``addresses``; RefusedAddress when none is."""
        addrs = list(addresses)
        ok = [a for a in addrs if self.allowed(host, a)]
        if addrs and not ok:
            raise self.refusal(host, addrs[0])
        return ok

    def check_name(self, host: str, port: int) -> None:
        """Resolve ``host`` (blocking) and check it: for the audit exporters' threads."""
        if _literal(host):
            return
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        self.check(host, [str(i[4][0]) for i in infos])

    async def resolve(self, host: str, port: int) -> list[tuple[int, str]]:
        """(family, address) pairs of ``host`` the gateway may connect to; RefusedAddress when there are none."""
        if _literal(host):
            ip = ipaddress.ip_address(host.strip("[]"))
            return [(socket.AF_INET6 if ip.version == 6 else socket.AF_INET, str(ip))]
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        pairs = [(int(i[0]), str(i[4][0])) for i in infos]
        ok = set(self.check(host, [a for _f, a in pairs]))
        return [(f, a) for f, a in pairs if a in ok]


class GuardedResolver(AbstractResolver):
    """aiohttp's resolver, keeping only the addresses the guard allows (IP literals never reach a resolver)."""

    def __init__(self, guard: NetGuard) -> None:
        self.guard = guard
        self.inner = DefaultResolver()

    async def resolve(self, host: str, port: int = 0, family: Any = socket.AF_INET) -> list[ResolveResult]:
        results = await self.inner.resolve(host, port, family)
        ok = set(self.guard.check(host, [r["host"] for r in results]))
        return [r for r in results if r["host"] in ok]

    async def close(self) -> None:
        await self.inner.close()


_current = NetGuard()


def set_guard(guard: NetGuard) -> None:
    """The guard of this process (the gateway sets it from ``network`` at start)."""
    global _current
    _current = guard


def current_guard() -> NetGuard:
    return _current
