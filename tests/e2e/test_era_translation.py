"""Era translation: a 2026-07-28 client reaches a session-era-only upstream, and a session-era client a
2026-07-28-only upstream, through the gateway."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from mcp.client import Client
from mcp.shared.exceptions import MCPDeprecationWarning

from tests.support.conformance import fixture_server_argv
from tests.support.gateway import RunningGateway, everything_stdio, running_gateway
from tests.support.procs import ManagedProcess, running_process
from tests.support.records import load_records

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def session_only() -> Iterator[ManagedProcess]:
    with running_process([*fixture_server_argv(port=0), "--only-era", "session"], ready_timeout=30) as p:
        yield p


@pytest.fixture(scope="module")
def only_2026() -> Iterator[ManagedProcess]:
    with running_process([*fixture_server_argv(port=0), "--only-era", "2026"], ready_timeout=30) as p:
        yield p


@pytest.fixture(scope="module")
def gateway(
    session_only: ManagedProcess, only_2026: ManagedProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningGateway]:
    servers: dict[str, Any] = {
        "sessiononly": {"url": session_only.ready_value},
        "only2026": {"url": only_2026.ready_value},
        "everything": everything_stdio(),
    }
    with running_gateway(tmp_path_factory.mktemp("gw"), servers) as gw:
        yield gw


async def exercise(c: Client) -> dict[str, Any]:
    seen: list[float] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append(progress)

    names = {t.name for t in (await c.list_tools()).tools}
    echo = await c.call_tool("echo", {"text": "across eras"})
    progress = await c.call_tool("test_tool_with_progress", {}, progress_callback=on_progress)
    text = await c.read_resource("test://static-text")
    prompt = await c.get_prompt("test_simple_prompt")
    return {
        "names": names,
        "echo": echo.content[0].text,  # type: ignore[union-attr]
        "progress": seen,
        "progress_error": progress.is_error,
        "resource": text.contents[0].text,  # type: ignore[union-attr]
        "prompt": len(prompt.messages),
    }


def assert_fixture_traffic(out: dict[str, Any]) -> None:
    assert {"echo", "test_tool_with_progress", "test_sampling"} <= out["names"]
    assert out["echo"] == "across eras"
    assert out["progress"] == [0, 50, 100] and not out["progress_error"]
    assert out["resource"] and out["prompt"] == 1


@pytest.mark.node
async def test_2026_client_reaches_a_stdio_session_era_server(gateway: RunningGateway) -> None:
    seen: list[float] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append(progress)

    async with Client(gateway.url("everything"), mode="2026-07-28") as c:
        assert c.protocol_version == "2026-07-28"
        r = await c.call_tool("echo", {"message": "stateless to stdio"})
        assert r.content[0].text == "Echo: stateless to stdio"  # type: ignore[union-attr]
        await c.call_tool("trigger-long-running-operation", {"duration": 1, "steps": 3}, progress_callback=on_progress)
    assert seen == [1, 2, 3]


async def test_2026_client_reaches_a_session_only_http_server(gateway: RunningGateway) -> None:
    async with Client(gateway.url("sessiononly"), mode="2026-07-28") as c:
        assert c.protocol_version == "2026-07-28"
        assert_fixture_traffic(await exercise(c))
    async with Client(gateway.url("sessiononly"), mode="auto") as c:  # discover is answered by the gateway
        assert c.protocol_version == "2026-07-28"
        assert c.server_info is not None and c.server_info.name == "portcullis-conformance-fixture"


async def test_session_client_reaches_a_2026_only_server(gateway: RunningGateway) -> None:
    async with Client(gateway.url("only2026"), mode="legacy") as c:
        assert c.protocol_version == "2025-11-25"
        assert c.server_info is not None and c.server_info.name == "portcullis-conformance-fixture"
        assert_fixture_traffic(await exercise(c))
        with pytest.warns(MCPDeprecationWarning):  # the SDK warns about ping in general; legacy mode still sends it
            await c.send_ping()  # answered by the gateway: 2026-07-28 has no ping


async def test_shared_upstream_session_keeps_clients_apart(gateway: RunningGateway) -> None:
    """Concurrent stateless clients use the same request ids; each still gets its own answers."""

    async def one(n: int) -> list[str]:
        out = []
        async with Client(gateway.url("sessiononly"), mode="2026-07-28") as c:
            for i in range(10):
                r = await c.call_tool("echo", {"text": f"client {n} call {i}"})
                out.append(r.content[0].text)  # type: ignore[union-attr]
        return out

    results = await asyncio.gather(*(one(n) for n in range(4)))
    for n, got in enumerate(results):
        assert got == [f"client {n} call {i}" for i in range(10)]


async def test_records_show_what_the_client_saw(gateway: RunningGateway) -> None:
    async with Client(gateway.url("sessiononly"), mode="2026-07-28") as c:
        await c.call_tool("echo", {"text": "recorded in client terms"})
    recs = [r for r in load_records(gateway.store) if r["server"] == "sessiononly" and r["method"] == "tools/call"]
    mine = [r for r in recs if b"recorded in client terms" in (r["payload"] or b"")]
    assert [(r["direction"], r["kind"]) for r in mine] == [("c2s", "request"), ("s2c", "result")]
    # the client's own id, not the gateway's upstream id, and the 2026-07-28 result shape
    assert mine[0]["msg_id"] == mine[1]["msg_id"] and b"portcullis-" not in mine[1]["payload"]
    assert b'"resultType":"complete"' in mine[1]["payload"]
