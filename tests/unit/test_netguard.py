"""The SSRF guard (upstream/netguard.py): which resolved addresses a name may lead to."""

from __future__ import annotations

import asyncio

import pytest

from portcullis.upstream.netguard import NetGuard, RefusedAddress, why_unreachable


@pytest.mark.parametrize(
    ("host", "address", "allowed"),
    [
        ("mcp.example.com", "93.184.216.34", True),  # public
        ("mcp.example.com", "127.0.0.1", False),  # a name pointing at the gateway itself
        ("mcp.example.com", "169.254.169.254", False),  # cloud metadata
        ("mcp.example.com", "10.0.0.7", False),
        ("mcp.example.com", "100.64.1.1", False),  # CGNAT
        ("mcp.example.com", "::1", False),
        ("mcp.example.com", "::ffff:10.0.0.7", False),  # v4-mapped does not slip through
        ("mcp.example.com", "fd00::1", False),
        ("mcp.example.com", "fe80::1%eth0", False),
        ("10.0.0.7", "10.0.0.7", True),  # an IP written in the configuration is explicit
        ("localhost", "127.0.0.1", True),
        ("localhost", "::1", True),
        ("db.internal", "10.9.9.9", True),  # private_hosts
        ("svc.ns.svc.cluster.local", "10.96.3.4", True),  # private_ranges
        ("svc.ns.svc.cluster.local", "10.200.3.4", False),
    ],
)
def test_which_addresses_a_name_may_lead_to(host: str, address: str, allowed: bool) -> None:
    guard = NetGuard(["db.internal"], ["10.96.0.0/12"])
    assert guard.allowed(host, address) is allowed


def test_a_refusal_names_the_setting_and_callers_never_see_the_address() -> None:
    guard = NetGuard()
    with pytest.raises(RefusedAddress) as refused:
        guard.check("evil.example", ["169.254.169.254"])
    assert "network.private_hosts" in str(refused.value)
    wrapped = ConnectionError("connect failed")
    wrapped.__cause__ = refused.value
    told = why_unreachable(wrapped)
    assert "private or special address" in told and "169.254" not in told
    assert why_unreachable(TimeoutError()) == "TimeoutError"
    assert guard.check("mixed.example", ["10.0.0.1", "93.184.216.34"]) == ["93.184.216.34"]  # only the public one


def test_resolving_keeps_only_allowed_addresses() -> None:
    async def run() -> None:
        assert await NetGuard().resolve("127.0.0.1", 80) == [(2, "127.0.0.1")]  # a literal: no lookup
        assert (await NetGuard().resolve("localhost", 80))[0][1] in ("127.0.0.1", "::1")

    asyncio.run(run())
