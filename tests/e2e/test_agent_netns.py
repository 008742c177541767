"""The deployment the agent is for, on one machine: the MCP server and the agent live in a network namespace of the
test's own (a private segment), joined to the gateway's side only by a veth pair. The server listens on the
namespace's loopback, so nothing outside can reach it; the agent dials out to the gateway; the official Python SDK
client, outside, reaches the server only through the gateway and the agent."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import httpx2
import pytest
from mcp.client import Client
from mcp.client.streamable_http import streamable_http_client

from tests.support.agents import connected, create_token, start_agent
from tests.support.conformance import fixture_server_argv
from tests.support.gateway import start_gateway
from tests.support.procs import running_process
from tests.support.waiting import eventually

pytestmark = pytest.mark.e2e


def ip(*args: str) -> None:
    res = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if res.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {res.stderr.strip()}")


@contextlib.contextmanager
def private_segment() -> Iterator[tuple[str, str, str]]:
    """(namespace, the gateway side's address, the namespace side's address) on a veth pair of our own."""
    n = random.randrange(1, 250)
    ns, host_if, ns_if = f"pcl-test-{n}", f"pclh{n}", f"pcln{n}"
    host_ip, ns_ip = f"10.251.{n}.1", f"10.251.{n}.2"
    try:
        ip("netns", "add", ns)
    except RuntimeError as exc:
        pytest.skip(f"network namespaces need CAP_SYS_ADMIN here: {exc}")
    try:
        ip("link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        ip("link", "set", ns_if, "netns", ns)
        ip("addr", "add", f"{host_ip}/30", "dev", host_if)
        ip("link", "set", host_if, "up")
        ip("netns", "exec", ns, "ip", "addr", "add", f"{ns_ip}/30", "dev", ns_if)
        ip("netns", "exec", ns, "ip", "link", "set", ns_if, "up")
        ip("netns", "exec", ns, "ip", "link", "set", "lo", "up")
        yield ns, host_ip, ns_ip
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
        subprocess.run(["ip", "link", "del", host_if], capture_output=True, timeout=30)


async def test_the_client_reaches_a_private_server_only_through_the_gateway_and_the_agent(tmp_path: Path) -> None:
    with private_segment() as (ns, host_ip, _ns_ip):
        inside = ["ip", "netns", "exec", ns]
        with running_process([*inside, *fixture_server_argv(port=0)], ready_timeout=30) as fixture:
            private_url = fixture.ready_value  # http://127.0.0.1:PORT/mcp — the namespace's own loopback
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
                with pytest.raises((aiohttp.ClientError, AssertionError)):  # from outside: not there
                    async with http.post(private_url, json={"jsonrpc": "2.0", "id": 1, "method": "ping"}) as r:
                        assert r.status == 200 and b'"result"' in await r.read()

            config = tmp_path / "gateway.yaml"
            config.write_text(
                json.dumps(
                    {
                        "listen": f"{host_ip}:0",
                        "store": f"sqlite:///{tmp_path / 'gw.db'}",
                        "auth": {
                            "mode": "oidc",
                            "dev_issuer": {"enabled": True, "key_file": str(tmp_path / "dev.jwk")},
                        },
                        "servers": {"private": {"via": "agent", "era": "session"}},
                    }
                )
            )
            store = f"sqlite:///{tmp_path / 'gw.db'}"
            gw = start_gateway(config, store)
            try:
                token = create_token(config, "segment-agent", ["private"])
                agent = start_agent(tmp_path, gw.base, {"private": {"url": private_url}}, token, inside)
                try:
                    await eventually(lambda: connected(store, "segment-agent"), 30, "the agent to dial out")
                    mint = ["token", "--config", str(config), "--url", gw.base, "--user", "alice"]
                    user = await asyncio.to_thread(
                        subprocess.run,
                        [sys.executable, "-m", "portcullis", *mint],
                        capture_output=True,
                        text=True,
                        timeout=30,
                    )
                    assert user.returncode == 0, user.stderr
                    headers = {"Authorization": f"Bearer {user.stdout.strip()}"}
                    async with (
                        httpx2.AsyncClient(headers=headers, timeout=20) as hc,
                        Client(streamable_http_client(gw.url("private"), http_client=hc), mode="legacy") as c,
                    ):
                        names = {t.name for t in (await c.list_tools()).tools}
                        assert "echo" in names
                        r = await c.call_tool("echo", {"text": "from outside the segment"})
                        assert "from outside the segment" in r.content[0].text  # type: ignore[union-attr]
                finally:
                    agent.stop(timeout=10)
            finally:
                gw.proc.stop(timeout=10)
