"""stdio upstream faults: a child that exits, hangs, writes garbage, floods stderr, or crash-loops at start."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mcp.client import Client
from mcp.shared.exceptions import MCPError

from tests.support.gateway import RunningGateway, running_gateway
from tests.support.records import load_records

pytestmark = pytest.mark.e2e

FAULTY = str(Path(__file__).resolve().parents[1] / "fixtures" / "faulty_stdio.py")


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    servers = {
        "faulty": {"command": [sys.executable, FAULTY], "call_timeout": 1.0},
        "crashy": {"command": [sys.executable, FAULTY, "--crash-at-start"], "restart_backoff_max": 30},
    }
    with running_gateway(tmp_path_factory.mktemp("gw"), servers) as gw:
        yield gw


async def test_child_exiting_mid_call_ends_the_call_and_the_session(gateway: RunningGateway) -> None:
    async with Client(gateway.url("faulty"), mode="legacy") as c:
        with pytest.raises(MCPError) as exc:
            await c.call_tool("exit", {})
        assert exc.value.error.code == -32001 and "exited" in exc.value.error.message
    # a new session gets a new child
    async with Client(gateway.url("faulty"), mode="legacy") as c:
        r = await c.call_tool("ok", {})
        assert r.content[0].text == "ok done"  # type: ignore[union-attr]


async def test_hanging_child_times_out_and_is_told_to_cancel(gateway: RunningGateway) -> None:
    async with Client(gateway.url("faulty"), mode="legacy") as c:
        t0 = time.monotonic()
        with pytest.raises(MCPError) as exc:
            await c.call_tool("hang", {})
        assert exc.value.error.code == -32003 and time.monotonic() - t0 < 10
        r = await c.call_tool("ok", {})  # the session goes on
        assert r.content[0].text == "ok done"  # type: ignore[union-attr]
    recs = load_records(gateway.store)
    assert any(r["outcome"] == "upstream_failed" and "sent nothing" in (r["detail"] or "") for r in recs)


async def test_garbage_lines_and_stderr_floods_do_not_break_the_session(gateway: RunningGateway) -> None:
    async with Client(gateway.url("faulty"), mode="legacy") as c:
        assert (await c.call_tool("garbage", {})).content[0].text == "garbage done"  # type: ignore[union-attr]
        assert (await c.call_tool("flood_stderr", {})).content[0].text == "flood_stderr done"  # type: ignore[union-attr]


async def test_crash_loop_backs_off(gateway: RunningGateway) -> None:
    messages = []
    for _ in range(2):
        with pytest.raises(Exception) as exc:  # the SDK wraps an initialize error differently by version
            async with Client(gateway.url("crashy"), mode="legacy"):
                pass
        messages.append(str(exc.value) + repr(exc.value))
    assert "exited" in messages[0]
    assert "next start allowed in" in messages[1]
