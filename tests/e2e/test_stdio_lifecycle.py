"""stdio children: an allow-listed environment, and the whole process tree ended with the session or the gateway."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import aiohttp
import pytest
from mcp.client import Client

from tests.support.gateway import start_gateway, write_config
from tests.support.waiting import eventually

pytestmark = pytest.mark.e2e

FAULTY = str(Path(__file__).resolve().parents[1] / "fixtures" / "faulty_stdio.py")
SECRET = "gateway-only-secret-7f3a9c"


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purposes
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(")")[-1].split()[0] != "Z"


async def tool_json(c: Client, name: str) -> dict[str, object]:
    r = await c.call_tool(name, {})
    data: dict[str, object] = json.loads(r.content[0].text)  # type: ignore[union-attr]
    return data


async def test_child_sees_only_allowed_environment(tmp_path: Path) -> None:
    servers = {"s": {"command": [sys.executable, FAULTY], "env": {"SOME_KEY": "value"}, "env_passthrough": ["LANG"]}}
    config, store = write_config(tmp_path, servers)
    gw = start_gateway(config, store, env={"PORTCULLIS_TEST_SECRET": SECRET, "LANG": "C.UTF-8"})
    try:
        async with Client(gw.url("s"), mode="legacy") as c:
            env = await tool_json(c, "env")
    finally:
        gw.proc.stop(timeout=10)
    assert env["SOME_KEY"] == "value" and env["LANG"] == "C.UTF-8"
    assert "PORTCULLIS_TEST_SECRET" not in env and SECRET not in json.dumps(env)
    assert set(env) <= {
        "HOME",
        "LOGNAME",
        "PATH",
        "SHELL",
        "TERM",
        "USER",
        "LANG",
        "LC_ALL",
        "TMPDIR",
        "NODE_PATH",
        "VIRTUAL_ENV",
        "SOME_KEY",
        "LC_CTYPE",
    }


async def test_session_end_kills_the_process_tree(tmp_path: Path) -> None:
    config, store = write_config(tmp_path, {"s": {"command": [sys.executable, FAULTY, "--grandchild"]}})
    gw = start_gateway(config, store)
    try:
        async with Client(gw.url("s"), mode="legacy") as c:
            pids = await tool_json(c, "pids")
            assert isinstance(pids["self"], int) and isinstance(pids["grandchild"], int)
            assert alive(pids["self"]) and alive(pids["grandchild"])
        # leaving the client ends the session (DELETE): child and grandchild go
        await eventually(lambda: not alive(pids["self"]) and not alive(pids["grandchild"]), what="tree ended")  # type: ignore[arg-type]
    finally:
        gw.proc.stop(timeout=10)


async def raw_pids(http: aiohttp.ClientSession, url: str) -> dict[str, int]:
    """Open a session with plain HTTP (it must outlive nothing but the gateway) and ask the child for its pids."""
    base = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
    init = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
    }
    async with http.post(url, json=init, headers=base) as r:
        sid = r.headers["Mcp-Session-Id"]
        await r.read()
    h = {**base, "Mcp-Session-Id": sid, "MCP-Protocol-Version": "2025-11-25"}
    call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "pids", "arguments": {}}}
    async with http.post(url, json=call, headers=h) as r:
        raw = await r.read()
    data = (
        [line[6:] for line in raw.split(b"\n") if line.startswith(b"data: ")][-1]
        if raw.startswith(b"id") or b"data: " in raw
        else raw
    )
    pids: dict[str, int] = json.loads(json.loads(data)["result"]["content"][0]["text"])
    return pids


async def test_gateway_shutdown_kills_every_tree(tmp_path: Path) -> None:
    config, store = write_config(tmp_path, {"s": {"command": [sys.executable, FAULTY, "--grandchild"]}})
    gw = start_gateway(config, store)
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as http:
            all_pids = [await raw_pids(http, gw.url("s")) for _ in range(2)]
        assert all(alive(p) for pids in all_pids for p in pids.values())
        gw.proc.stop(timeout=15)  # SIGTERM: the gateway ends its sessions and their trees before it exits
        assert gw.proc.popen.returncode == 0
        for pids in all_pids:
            assert not alive(pids["self"]) and not alive(pids["grandchild"])
    finally:
        gw.proc.stop(timeout=5)
