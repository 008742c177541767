"""SSRF guard (``network``): a name that resolves to a private, loopback or link-local address is refused unless the
configuration allows it; an IP address written in the configuration is explicit. The machine's own host name
resolves to a loopback address (Debian maps it in /etc/hosts), which stands in for a DNS answer pointing inside."""

from __future__ import annotations

import ipaddress
import socket
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.gateway import running_gateway
from tests.support.procs import ManagedProcess, running_process
from tests.support.raw import ACCEPT, initialize
from tests.support.records import load_records

pytestmark = pytest.mark.e2e


def inside_name() -> str:
    name = socket.gethostname()
    addrs = {i[4][0] for i in socket.getaddrinfo(name, 80, type=socket.SOCK_STREAM)}
    assert addrs and all(ipaddress.ip_address(a).is_loopback for a in addrs), (
        f"this test needs the host name {name!r} to resolve to loopback (it resolves to {addrs})"
    )
    return name


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as s:
        yield s


async def first_answer(http: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with http.post(url, json=initialize(1), headers={"Accept": ACCEPT}) as r:
        raw = await r.read()
    if not raw.startswith(b"{"):
        raw = [line[6:] for line in raw.split(b"\n") if line.startswith(b"data: ")][-1]
    import json

    answer: dict[str, Any] = json.loads(raw)
    return answer


FAULTY = Path(__file__).resolve().parents[1] / "fixtures" / "faulty_upstream.py"


@pytest.fixture(scope="module")
def fixture() -> Iterator[ManagedProcess]:
    """An upstream that answers whatever Host it is called by (the SDK's servers refuse other names: DNS rebinding)."""
    with running_process([sys.executable, str(FAULTY), "--port", "0"], ready_timeout=30) as proc:
        yield proc


async def test_a_name_that_points_inside_is_refused_unless_configured(
    fixture: ManagedProcess, tmp_path_factory: pytest.TempPathFactory, http: aiohttp.ClientSession
) -> None:
    name = inside_name()
    by_name = fixture.ready_value.replace("127.0.0.1", name)
    servers = {"named": {"url": by_name}, "literal": {"url": fixture.ready_value}}
    with running_gateway(tmp_path_factory.mktemp("ssrf"), servers) as gw:
        refused = await first_answer(http, gw.url("named"))
        assert "error" in refused and "private or special address" in refused["error"]["message"], refused
        assert "network.private_hosts" in refused["error"]["message"] and "127.0.0.1" not in refused["error"]["message"]
        literal = await first_answer(http, gw.url("literal"))  # an IP written in the configuration is explicit
        assert "result" in literal, literal
        assert any("private or special address" in (r["detail"] or "") for r in load_records(gw.store))  # recorded
    allowed = {"network": {"private_hosts": [name]}}
    with running_gateway(tmp_path_factory.mktemp("ssrf-allowed"), {"named": {"url": by_name}}, **allowed) as gw:
        assert "result" in await first_answer(http, gw.url("named"))
    by_range = {"network": {"private_ranges": ["127.0.0.0/8"]}}
    with running_gateway(tmp_path_factory.mktemp("ssrf-range"), {"named": {"url": by_name}}, **by_range) as gw:
        assert "result" in await first_answer(http, gw.url("named"))
