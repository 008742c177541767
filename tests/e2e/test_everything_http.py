"""The official Python SDK client, through the gateway, to server-everything over Streamable HTTP.

server-everything runs as its own process (``streamableHttp`` transport, bound to 127.0.0.1 by
tests/support/everything.py); the gateway reaches it as a ``url`` upstream, so every exchange here crosses two
HTTP hops: client → gateway → server-everything, with SSE response streams on both.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import aiohttp
import anyio
import pytest
from mcp import types
from mcp.client import Client

from tests.support.everything import EverythingHttp, listening_sockets, running_everything_http
from tests.support.gateway import RunningGateway, running_gateway
from tests.support.records import load_records

pytestmark = [pytest.mark.e2e, pytest.mark.node]


@pytest.fixture(scope="module")
def everything() -> Iterator[EverythingHttp]:
    with running_everything_http() as server:
        yield server


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, everything: EverythingHttp) -> Iterator[RunningGateway]:
    with running_gateway(tmp_path_factory.mktemp("gw-http"), {"everything": {"url": everything.url}}) as gw:
        yield gw


def _text(result: types.CallToolResult) -> str:
    return "\n".join(c.text for c in result.content if isinstance(c, types.TextContent))


def _payload(rec: dict[str, Any]) -> dict[str, Any]:
    raw = rec["payload"]
    assert raw, rec
    body = json.loads(raw)
    assert isinstance(body, dict), rec
    return body


def _session_of(recs: list[dict[str, Any]], marker: bytes) -> str:
    """The gateway session id of the (single) session whose records contain ``marker``."""
    sessions = {r["session_id"] for r in recs if marker in (r["payload"] or b"")}
    assert len(sessions) == 1 and None not in sessions, sessions
    return sessions.pop()


async def test_upstream_is_on_loopback_only(everything: EverythingHttp) -> None:
    """server-everything (which binds every interface by default) listens on 127.0.0.1 and nothing else."""
    assert everything.url.startswith("http://127.0.0.1:")
    assert everything.proc.ready_line.startswith("LOOPBACK_LISTENING 127.0.0.1:")
    # the kernel's view, not the process's own claim
    assert listening_sockets(everything.proc.pid) == [("127.0.0.1", everything.port)]


async def test_lists_and_calls_tools(gateway: RunningGateway) -> None:
    async with Client(gateway.url("everything"), mode="legacy") as c:
        assert c.protocol_version == "2025-11-25"
        assert c.server_info is not None and "everything" in c.server_info.name.lower()
        tools = {t.name: t for t in (await c.list_tools()).tools}
        assert {"echo", "get-sum", "get-structured-content", "trigger-long-running-operation"} <= set(tools)
        # no sampling/elicitation capability declared: the capability-gated tools are absent
        assert "trigger-sampling-request" not in tools and "trigger-elicitation-request" not in tools
        r = await c.call_tool("echo", {"message": "through two HTTP hops"})
        assert r.content[0].type == "text" and r.content[0].text == "Echo: through two HTTP hops"
        r = await c.call_tool("get-sum", {"a": 2, "b": 40})
        assert "42" in _text(r)
        r = await c.call_tool("get-structured-content", {"location": "New York"})
        assert r.is_error is not True
        assert r.structured_content is not None and "temperature" in r.structured_content
        assert json.loads(_text(r)) == r.structured_content  # the text twin came through intact
        r = await c.call_tool("get-sum", {"a": "not a number", "b": 1})
        assert r.is_error is True  # a tool-level error is a result, passed through as such


async def test_resources_and_prompts(gateway: RunningGateway) -> None:
    async with Client(gateway.url("everything"), mode="legacy") as c:
        resources = (await c.list_resources()).resources
        assert resources
        for res in resources[:3]:
            read = await c.read_resource(str(res.uri))
            assert read.contents and str(read.contents[0].uri) == str(res.uri)
        templates = (await c.list_resource_templates()).resource_templates
        assert templates
        prompts = {p.name for p in (await c.list_prompts()).prompts}
        assert {"simple-prompt", "args-prompt"} <= prompts
        got = await c.get_prompt("simple-prompt")
        assert got.messages and "without arguments" in str(got.messages[0].content)
        got = await c.get_prompt("args-prompt", {"city": "Lisbon"})
        assert "Lisbon" in str(got.messages[0].content)


async def test_progress_streams_before_the_result(gateway: RunningGateway) -> None:
    """Each progress event crosses both SSE hops as it happens, not buffered until the tool finishes."""
    seen: list[tuple[float, float]] = []
    async with Client(gateway.url("everything"), mode="legacy") as c:

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            seen.append((progress, anyio.current_time()))

        r = await c.call_tool(
            "trigger-long-running-operation", {"duration": 2, "steps": 4}, progress_callback=on_progress
        )
        done = anyio.current_time()
        assert r.is_error is not True and "Steps: 4" in _text(r)
    assert [p for p, _ in seen] == [1, 2, 3, 4]
    # the server spaces the steps 0.5 s apart: the first one arrives well before the result
    assert done - seen[0][1] > 1.0


async def test_sampling_round_trip(gateway: RunningGateway) -> None:
    asked: list[types.CreateMessageRequestParams] = []

    async def sampling(ctx: object, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        asked.append(params)
        return types.CreateMessageResult(
            role="assistant", content=types.TextContent(type="text", text="sampled over http"), model="test-model"
        )

    async with Client(gateway.url("everything"), mode="legacy", sampling_callback=sampling) as c:
        names = {t.name for t in (await c.list_tools()).tools}
        assert "trigger-sampling-request" in names
        r = await c.call_tool("trigger-sampling-request", {"prompt": "hello http sampler", "maxTokens": 10})
        assert "sampled over http" in _text(r) and "test-model" in _text(r)
    assert len(asked) == 1
    content = asked[0].messages[0].content
    assert isinstance(content, types.TextContent) and "hello http sampler" in content.text
    assert asked[0].max_tokens == 10

    # the server→client request and the client's answer are recorded in the same session as the call
    recs = load_records(gateway.store)
    sid = _session_of(recs, b"hello http sampler")
    mine = [r for r in recs if r["session_id"] == sid]
    s2c_req = [r for r in mine if r["method"] == "sampling/createMessage" and r["kind"] == "request"]
    assert len(s2c_req) == 1 and s2c_req[0]["direction"] == "s2c"
    answer = [
        r for r in mine if r["direction"] == "c2s" and r["kind"] == "result" and r["msg_id"] == s2c_req[0]["msg_id"]
    ]
    assert len(answer) == 1 and b"sampled over http" in answer[0]["payload"]
    call = [r for r in mine if r["method"] == "tools/call" and b"trigger-sampling-request" in (r["payload"] or b"")]
    result = [r for r in mine if r["method"] == "tools/call" and r["direction"] == "s2c"]
    assert call and result
    assert call[0]["seq"] < s2c_req[0]["seq"] < answer[0]["seq"] < result[-1]["seq"]


@pytest.mark.parametrize("action", ["accept", "decline", "cancel"])
async def test_elicitation_round_trip(gateway: RunningGateway, action: str) -> None:
    asked: list[types.ElicitRequestParams] = []

    async def elicit(ctx: object, params: types.ElicitRequestParams) -> types.ElicitResult:
        asked.append(params)
        if action == "accept":
            return types.ElicitResult(action="accept", content={"name": "Ada Lovelace", "check": True, "integer": 7})
        return types.ElicitResult(action=action)  # type: ignore[arg-type]

    async with Client(gateway.url("everything"), mode="legacy", elicitation_callback=elicit) as c:
        names = {t.name for t in (await c.list_tools()).tools}
        assert "trigger-elicitation-request" in names
        r = await c.call_tool("trigger-elicitation-request", {})
    assert len(asked) == 1 and "Please provide inputs" in asked[0].message
    text = _text(r)
    assert f'"action": "{action}"' in text, text
    if action == "accept":
        assert "- Name: Ada Lovelace" in text and "- Agreed to terms: true" in text and "- Favorite Integer: 7" in text


async def test_every_tools_call_is_recorded_in_order(gateway: RunningGateway) -> None:
    marker = f"record-me-{uuid.uuid4().hex}"
    async with Client(gateway.url("everything"), mode="legacy") as c:
        await c.call_tool("echo", {"message": marker})
        await c.call_tool("get-sum", {"a": 20, "b": 22})
        await c.call_tool("trigger-long-running-operation", {"duration": 0.2, "steps": 2})
        await c.call_tool("echo", {"message": marker + "-again"})
    recs = load_records(gateway.store)
    sid = _session_of(recs, marker.encode())
    mine = [r for r in recs if r["session_id"] == sid]
    assert [r["seq"] for r in mine] == sorted(r["seq"] for r in mine)

    calls = [r for r in mine if r["method"] == "tools/call"]
    requests = [r for r in calls if (r["direction"], r["kind"]) == ("c2s", "request")]
    responses = [r for r in calls if r["direction"] == "s2c"]
    assert [_payload(r)["params"]["name"] for r in requests] == [
        "echo",
        "get-sum",
        "trigger-long-running-operation",
        "echo",
    ]
    assert len(responses) == 4 and all((r["kind"], r["outcome"]) == ("result", "ok") for r in responses)
    # each request is followed by its own response (same id) before the next request: strictly in order
    for req, res in zip(requests, responses, strict=True):
        assert req["msg_id"] == res["msg_id"] == json.dumps(_payload(req)["id"])
        assert req["seq"] < res["seq"]
        assert _payload(res)["id"] == _payload(req)["id"]
    for res, nxt in zip(responses, requests[1:], strict=False):
        assert res["seq"] < nxt["seq"]
    assert f"Echo: {marker}".encode() in responses[0]["payload"]
    assert b"42" in responses[1]["payload"]

    kinds = [r["kind"] for r in mine]
    assert "session_open" in kinds and "session_close" in kinds
    assert all(r["direction"] == "gw" for r in mine[kinds.index("session_close") :])
    init = [r for r in mine if r["method"] == "initialize"]
    assert [(r["direction"], r["kind"]) for r in init] == [("c2s", "request"), ("s2c", "result")]


async def test_cancellation_reaches_the_upstream(gateway: RunningGateway) -> None:
    """A cancelled call's ``notifications/cancelled`` crosses the gateway to server-everything, which then withholds
    the call's result (the TypeScript SDK drops the response of an aborted request): none is ever recorded."""
    marker = f"cancel-me-{uuid.uuid4().hex}"
    async with Client(gateway.url("everything"), mode="legacy") as c:
        await c.call_tool("echo", {"message": marker})
        with anyio.move_on_after(0.4) as scope:
            await c.call_tool("trigger-long-running-operation", {"duration": 1.2, "steps": 3})
        assert scope.cancelled_caught
        # outlast the cancelled operation (1.2 s) with real work on the same session, then check nothing leaked
        r = await c.call_tool("trigger-long-running-operation", {"duration": 1.6, "steps": 2})
        assert "Duration: 1.6" in _text(r)
        r = await c.call_tool("echo", {"message": "still alive"})
        assert _text(r) == "Echo: still alive"
    recs = load_records(gateway.store)
    sid = _session_of(recs, marker.encode())
    mine = [r for r in recs if r["session_id"] == sid]
    cancelled_call = next(
        r
        for r in mine
        if r["method"] == "tools/call"
        and r["kind"] == "request"
        and b'"duration":1.2' in r["payload"].replace(b" ", b"")
    )
    cancels = [r for r in mine if r["method"] == "notifications/cancelled"]
    assert len(cancels) == 1, cancels
    cancel = cancels[0]
    assert cancel["direction"] == "c2s" and cancel["seq"] > cancelled_call["seq"]
    assert json.dumps(_payload(cancel)["params"]["requestId"]) == cancelled_call["msg_id"]
    assert cancel["outcome"] in (None, "ok"), cancel  # forwarded: the upstream accepted it
    # without the cancel, the upstream would answer after 1.2 s and the gateway would record that result (it keeps
    # following an upstream stream its client dropped: disconnect is not cancellation)
    late = [r for r in mine if r["direction"] == "s2c" and r["msg_id"] == cancelled_call["msg_id"]]
    assert late == [], late


async def _second_get_stream_status(url: str) -> tuple[int, int, str]:
    """Open a session and its standalone GET stream, then ask for a second one while the first is open."""
    timeout = aiohttp.ClientTimeout(total=15)
    post = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    init = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}},
    }
    async with aiohttp.ClientSession(timeout=timeout) as http:
        async with http.post(url, json=init, headers=post) as r:
            assert r.status == 200, await r.text()
            sid = r.headers["Mcp-Session-Id"]
            await r.read()
        session = {"Mcp-Session-Id": sid, "MCP-Protocol-Version": "2025-11-25"}
        initialized = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        async with http.post(url, json=initialized, headers={**post, **session}) as r:
            assert r.status == 202, await r.text()
        get = {**session, "Accept": "text/event-stream"}
        async with http.get(url, headers=get) as first, http.get(url, headers=get) as second:
            out = (first.status, second.status, await second.text())
        async with http.delete(url, headers=session) as r:
            await r.read()
    return out


async def test_upstream_409_on_second_get_stream_is_relayed_not_turned_into_502(
    everything: EverythingHttp, gateway: RunningGateway
) -> None:
    """An upstream refuses a second standalone GET stream on one session with 409 Conflict (server-everything and the
    Python SDK both do): that is the client's conflict, not an upstream failure, and the client must see it as such.

    Regression test: the gateway used to answer 502 Bad Gateway with -32002 "upstream answered HTTP 409" (every
    upstream GET status other than 200, 404 and 405 became 502), fixed in d1cb310. The TypeScript SDK client meets
    this after a cancelled call (its SSE reconnect logic sends a plain GET while its standalone stream is open) and
    reported "Failed to open SSE stream: Bad Gateway"; see tests/e2e/test_ts_client.py."""
    direct = await _second_get_stream_status(everything.url)
    assert direct[:2] == (200, 409), direct  # the upstream's own answer
    via = await _second_get_stream_status(gateway.url("everything"))
    assert via[0] == 200, via
    assert via[1] == 409, f"expected the upstream's 409 relayed, got {via[1]}: {via[2]}"
