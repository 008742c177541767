"""The legacy HTTP+SSE transport (2024-11-05): old clients in front of the gateway, old servers behind it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from mcp.client import Client
from mcp.client.sse import sse_client

from tests.support.conformance import fixture_server_argv
from tests.support.gateway import RunningGateway, everything_stdio, running_gateway
from tests.support.procs import ManagedProcess, running_process
from tests.support.records import load_records
from tests.support.waiting import eventually

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def modern() -> Iterator[ManagedProcess]:
    with running_process(fixture_server_argv(port=0), ready_timeout=30) as p:
        yield p


@pytest.fixture(scope="module")
def old() -> Iterator[ManagedProcess]:
    with running_process([*fixture_server_argv(port=0), "--legacy-sse"], ready_timeout=30) as p:
        yield p


@pytest.fixture(scope="module")
def gateway(
    modern: ManagedProcess, old: ManagedProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningGateway]:
    servers: dict[str, Any] = {
        "modern": {"url": modern.ready_value},
        "old": {"url": old.ready_value, "transport": "sse"},
        "everything": everything_stdio(),
    }
    with running_gateway(tmp_path_factory.mktemp("gw"), servers) as gw:
        yield gw


async def exercise(c: Client) -> None:
    progress: list[float] = []

    async def on_progress(p: float, total: float | None, message: str | None) -> None:
        progress.append(p)

    names = {t.name for t in (await c.list_tools()).tools}
    assert {"echo", "test_tool_with_progress"} <= names
    r = await c.call_tool("echo", {"text": "old and new"})
    assert r.content[0].text == "old and new"  # type: ignore[union-attr]
    await c.call_tool("test_tool_with_progress", {}, progress_callback=on_progress)
    assert progress == [0, 50, 100]
    text = await c.read_resource("test://static-text")
    assert text.contents


async def test_legacy_client_to_a_streamable_http_server(gateway: RunningGateway) -> None:
    async with Client(sse_client(f"{gateway.url('modern')}/sse"), mode="legacy") as c:
        await exercise(c)


async def test_streamable_client_to_a_legacy_sse_server(gateway: RunningGateway) -> None:
    async with Client(gateway.url("old"), mode="legacy") as c:
        await exercise(c)


async def test_legacy_client_to_a_legacy_sse_server(gateway: RunningGateway) -> None:
    async with Client(sse_client(f"{gateway.url('old')}/sse"), mode="legacy") as c:
        await exercise(c)


async def test_2026_client_to_a_legacy_sse_server(gateway: RunningGateway) -> None:
    async with Client(gateway.url("old"), mode="2026-07-28") as c:
        await exercise(c)


@pytest.mark.node
async def test_legacy_client_to_a_stdio_server(gateway: RunningGateway) -> None:
    async with Client(sse_client(f"{gateway.url('everything')}/sse"), mode="legacy") as c:
        r = await c.call_tool("echo", {"message": "old client, stdio server"})
        assert r.content[0].text == "Echo: old client, stdio server"  # type: ignore[union-attr]


async def test_legacy_sessions_are_recorded(gateway: RunningGateway) -> None:
    async with Client(sse_client(f"{gateway.url('modern')}/sse"), mode="legacy") as c:
        await c.call_tool("echo", {"text": "legacy recorded"})
    recs = load_records(gateway.store)
    mine = [r for r in recs if b"legacy recorded" in (r["payload"] or b"")]
    assert [(r["direction"], r["kind"]) for r in mine] == [("c2s", "request"), ("s2c", "result")]
    sid = mine[0]["session_id"]

    def kinds() -> list[str]:
        return [r["kind"] for r in load_records(gateway.store) if r["session_id"] == sid]

    assert "session_open" in kinds()
    # the gateway notices the closed stream on its own time
    await eventually(lambda: kinds()[-1] == "session_close", what="session_close record")
