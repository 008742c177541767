"""The official Python SDK client, through the gateway, to server-everything running as a stdio child."""

from __future__ import annotations

from collections.abc import Iterator

import anyio
import pytest
from mcp import types
from mcp.client import Client

from tests.support.gateway import RunningGateway, everything_stdio, running_gateway
from tests.support.records import load_records

pytestmark = [pytest.mark.e2e, pytest.mark.node]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    with running_gateway(tmp_path_factory.mktemp("gw"), {"everything": everything_stdio()}) as gw:
        yield gw


async def test_lists_and_calls_tools(gateway: RunningGateway) -> None:
    async with Client(gateway.url("everything"), mode="legacy") as c:
        assert c.protocol_version == "2025-11-25"
        names = {t.name for t in (await c.list_tools()).tools}
        assert {"echo", "get-sum", "trigger-long-running-operation"} <= names
        r = await c.call_tool("echo", {"message": "through the gateway"})
        assert r.content[0].type == "text" and r.content[0].text == "Echo: through the gateway"
        r = await c.call_tool("get-sum", {"a": 2, "b": 40})
        assert "42" in r.content[0].text  # type: ignore[union-attr]


async def test_resources_and_prompts(gateway: RunningGateway) -> None:
    async with Client(gateway.url("everything"), mode="legacy") as c:
        resources = (await c.list_resources()).resources
        assert resources
        first = resources[0]
        read = await c.read_resource(str(first.uri))
        assert read.contents and str(read.contents[0].uri) == str(first.uri)
        prompts = {p.name for p in (await c.list_prompts()).prompts}
        assert "simple-prompt" in prompts
        got = await c.get_prompt("simple-prompt")
        assert got.messages


async def test_progress_streams_before_the_result(gateway: RunningGateway) -> None:
    """Each progress event reaches the client as it happens, not buffered until the tool finishes."""
    seen: list[tuple[float, float]] = []
    async with Client(gateway.url("everything"), mode="legacy") as c:

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            seen.append((progress, anyio.current_time()))

        r = await c.call_tool(
            "trigger-long-running-operation", {"duration": 2, "steps": 4}, progress_callback=on_progress
        )
        done = anyio.current_time()
        assert r.is_error is not True
    assert [p for p, _ in seen] == [1, 2, 3, 4]
    # the server spaces the steps 0.5 s apart: the first one arrives well before the result
    assert done - seen[0][1] > 1.0


async def test_sampling_round_trip(gateway: RunningGateway) -> None:
    asked: list[str] = []

    async def sampling(ctx: object, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        content = params.messages[0].content
        asked.append(content.text if isinstance(content, types.TextContent) else "?")
        return types.CreateMessageResult(
            role="assistant", content=types.TextContent(type="text", text="sampled answer"), model="test-model"
        )

    async with Client(gateway.url("everything"), mode="legacy", sampling_callback=sampling) as c:
        names = {t.name for t in (await c.list_tools()).tools}
        assert "trigger-sampling-request" in names
        r = await c.call_tool("trigger-sampling-request", {"prompt": "hello sampler", "maxTokens": 10})
        assert "sampled answer" in str(r.content)
    assert asked and "hello sampler" in asked[0]


async def test_elicitation_round_trip(gateway: RunningGateway) -> None:
    async def elicit(ctx: object, params: types.ElicitRequestParams) -> types.ElicitResult:
        return types.ElicitResult(action="decline")

    async with Client(gateway.url("everything"), mode="legacy", elicitation_callback=elicit) as c:
        names = {t.name for t in (await c.list_tools()).tools}
        assert "trigger-elicitation-request" in names
        r = await c.call_tool("trigger-elicitation-request", {})
        assert "decline" in str(r.content).lower()


async def test_every_message_is_recorded_in_order(gateway: RunningGateway) -> None:
    async with Client(gateway.url("everything"), mode="legacy") as c:
        await c.call_tool("echo", {"message": "record me"})
    recs = load_records(gateway.store)
    calls = [r for r in recs if r["method"] == "tools/call" and b"record me" in (r["payload"] or b"")]
    assert len(calls) == 2, calls  # the request and its result
    req, res = calls
    assert (req["direction"], req["kind"]) == ("c2s", "request")
    assert (res["direction"], res["kind"], res["outcome"]) == ("s2c", "result", "ok")
    assert req["seq"] < res["seq"] and req["session_id"] == res["session_id"] is not None
    kinds = [r["kind"] for r in recs if r["session_id"] == req["session_id"]]
    assert kinds[0] == "request" and "session_open" in kinds and kinds[-1] == "session_close"


async def test_cancellation_reaches_the_upstream(gateway: RunningGateway) -> None:
    async with Client(gateway.url("everything"), mode="legacy") as c:
        with anyio.move_on_after(0.5) as scope:
            await c.call_tool("trigger-long-running-operation", {"duration": 30, "steps": 30})
        assert scope.cancelled_caught
        r = await c.call_tool("echo", {"message": "still alive"})
        assert r.content[0].text == "Echo: still alive"  # type: ignore[union-attr]
    recs = load_records(gateway.store)
    cancel = next(r for r in recs if r["method"] == "notifications/cancelled" and r["direction"] == "c2s")
    sid = cancel["session_id"]
    # the gateway stopped waiting for the cancelled call: recorded as cancelled, never as an upstream failure
    assert any(r["kind"] == "cancelled" and r["session_id"] == sid for r in recs)
    assert not any(r["outcome"] == "upstream_failed" and r["session_id"] == sid for r in recs)
