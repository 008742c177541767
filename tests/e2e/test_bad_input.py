"""Bad input and failing upstreams: each gets a precise error, reaches no upstream half-checked, and is recorded."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.gateway import RunningGateway, running_gateway
from tests.support.procs import ManagedProcess, running_process
from tests.support.records import load_records
from tests.support.waiting import eventually

pytestmark = pytest.mark.e2e

FAULTY = Path(__file__).resolve().parents[1] / "fixtures" / "faulty_upstream.py"
ACCEPT = "application/json, text/event-stream"
INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
}
MAX_BODY = 65536


@pytest.fixture(scope="module")
def faulty() -> Iterator[ManagedProcess]:
    with running_process([sys.executable, str(FAULTY), "--port", "0"], ready_timeout=30) as proc:
        yield proc


@pytest.fixture(scope="module")
def gateway(faulty: ManagedProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    servers = {"faulty": {"url": faulty.ready_value}, "dead": {"url": "http://127.0.0.1:9/mcp"}}
    with running_gateway(tmp_path_factory.mktemp("gw"), servers, limits={"max_body_bytes": MAX_BODY}) as gw:
        yield gw


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as s:
        yield s


async def received(http: aiohttp.ClientSession, faulty: ManagedProcess) -> list[str]:
    async with http.get(faulty.ready_value.removesuffix("/mcp") + "/received") as r:
        data: list[str] = await r.json()
        return data


async def post(
    http: aiohttp.ClientSession, url: str, body: bytes | dict[str, Any], **headers: str
) -> tuple[int, dict[str, Any] | None, aiohttp.typedefs.LooseHeaders]:
    h = {"Content-Type": "application/json", "Accept": ACCEPT, **headers}
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with http.post(url, data=data, headers=h) as r:
        raw = await r.read()
        parsed = None
        if r.headers.get("Content-Type", "").startswith("application/json") and raw:
            parsed = json.loads(raw)
        elif raw.startswith(b"id:") or raw.startswith(b"event:") or b"data: " in raw:
            datas = [line[6:] for line in raw.split(b"\n") if line.startswith(b"data: ") and line[6:].strip()]
            parsed = json.loads(datas[-1])
        return r.status, parsed, r.headers


async def session(http: aiohttp.ClientSession, url: str) -> str:
    status, body, headers = await post(http, url, INIT)
    assert status == 200, body
    sid = headers["Mcp-Session-Id"]
    assert isinstance(sid, str)
    st, _, _ = await post(
        http,
        url,
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        **{"Mcp-Session-Id": sid, "MCP-Protocol-Version": "2025-11-25"},
    )
    assert st == 202
    return sid


def call(mid: int, tool: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": mid, "method": "tools/call", "params": {"name": tool, "arguments": {}}}


def rejected(gw: RunningGateway, needle: str) -> list[dict[str, Any]]:
    return [r for r in load_records(gw.store) if r["kind"] == "rejected" and needle in (r["detail"] or "")]


async def test_malformed_json(gateway: RunningGateway, http: aiohttp.ClientSession, faulty: ManagedProcess) -> None:
    before = await received(http, faulty)
    status, body, _ = await post(http, gateway.url("faulty"), b'{"jsonrpc": "2.0", "id": 1, "method": ')
    assert status == 400 and body is not None
    assert body["error"]["code"] == -32700 and body["id"] is None
    assert await received(http, faulty) == before
    assert rejected(gateway, "400: Parse error")


async def test_not_a_jsonrpc_message(gateway: RunningGateway, http: aiohttp.ClientSession) -> None:
    status, body, _ = await post(http, gateway.url("faulty"), {"jsonrpc": "1.0", "id": 1, "method": "x"})
    assert status == 400 and body is not None and body["error"]["code"] == -32600
    status, body, _ = await post(http, gateway.url("faulty"), {"jsonrpc": "2.0", "id": {"no": 1}, "method": "x"})
    assert status == 400 and body is not None and "id must be" in body["error"]["message"]


async def test_wrong_content_type(gateway: RunningGateway, http: aiohttp.ClientSession) -> None:
    status, body, _ = await post(http, gateway.url("faulty"), INIT, **{"Content-Type": "text/plain"})
    assert status == 415 and body is not None and "Content-Type" in body["error"]["message"]
    assert rejected(gateway, "415")


async def test_accept_must_list_both(gateway: RunningGateway, http: aiohttp.ClientSession) -> None:
    status, body, _ = await post(http, gateway.url("faulty"), INIT, Accept="application/json")
    assert status == 406 and body is not None


async def test_body_over_the_limit(
    gateway: RunningGateway, http: aiohttp.ClientSession, faulty: ManagedProcess
) -> None:
    before = await received(http, faulty)
    big = call(5, "ok")
    big["params"]["arguments"] = {"blob": "x" * (MAX_BODY + 10)}
    status, body, _ = await post(http, gateway.url("faulty"), big)
    assert status == 413 and body is not None and str(MAX_BODY) in body["error"]["message"]
    assert await received(http, faulty) == before
    assert rejected(gateway, "413")


async def test_unknown_session(gateway: RunningGateway, http: aiohttp.ClientSession) -> None:
    status, body, _ = await post(
        http, gateway.url("faulty"), call(2, "ok"), **{"Mcp-Session-Id": "nope", "MCP-Protocol-Version": "2025-11-25"}
    )
    assert status == 404 and body is not None and "session" in body["error"]["message"]


async def test_missing_session_header(gateway: RunningGateway, http: aiohttp.ClientSession) -> None:
    status, body, _ = await post(http, gateway.url("faulty"), call(2, "ok"))
    assert status == 400 and body is not None and "Mcp-Session-Id" in body["error"]["message"]


async def test_ended_session_is_404(gateway: RunningGateway, http: aiohttp.ClientSession) -> None:
    url = gateway.url("faulty")
    sid = await session(http, url)
    async with http.delete(url, headers={"Mcp-Session-Id": sid, "MCP-Protocol-Version": "2025-11-25"}) as r:
        assert r.status == 200
    status, _, _ = await post(http, url, call(3, "ok"), **{"Mcp-Session-Id": sid, "MCP-Protocol-Version": "2025-11-25"})
    assert status == 404


async def test_protocol_version_header_checked(gateway: RunningGateway, http: aiohttp.ClientSession) -> None:
    url = gateway.url("faulty")
    sid = await session(http, url)
    status, body, _ = await post(
        http, url, call(3, "ok"), **{"Mcp-Session-Id": sid, "MCP-Protocol-Version": "1999-01-01"}
    )
    assert status == 400 and body is not None and "MCP-Protocol-Version" in body["error"]["message"]
    status, body, _ = await post(
        http, url, call(4, "ok"), **{"Mcp-Session-Id": sid, "MCP-Protocol-Version": "2025-06-18"}
    )
    assert status == 400 and body is not None


async def test_batch_where_the_version_forbids(
    gateway: RunningGateway, http: aiohttp.ClientSession, faulty: ManagedProcess
) -> None:
    url = gateway.url("faulty")
    sid = await session(http, url)
    before = await received(http, faulty)
    status, body, _ = await post(
        http,
        url,
        json.dumps([call(5, "ok"), call(6, "ok")]).encode(),
        **{"Mcp-Session-Id": sid, "MCP-Protocol-Version": "2025-11-25"},
    )
    assert status == 400 and body is not None and "batch" in body["error"]["message"]
    assert await received(http, faulty) == before


async def test_stateless_header_mismatch(
    gateway: RunningGateway, http: aiohttp.ClientSession, faulty: ManagedProcess
) -> None:
    before = await received(http, faulty)
    req = call(7, "ok")
    req["params"]["_meta"] = {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
    }
    headers = {"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call", "Mcp-Name": "something-else"}
    status, body, _ = await post(http, gateway.url("faulty"), req, **headers)
    assert status == 400 and body is not None
    assert body["error"]["code"] == -32020 and body["id"] == 7
    headers["Mcp-Name"] = "ok"
    headers["Mcp-Method"] = "tools/list"
    status, body, _ = await post(http, gateway.url("faulty"), req, **headers)
    assert status == 400 and body is not None and body["error"]["code"] == -32020
    assert await received(http, faulty) == before


async def test_origin_and_host_checked(gateway: RunningGateway, http: aiohttp.ClientSession) -> None:
    status, body, _ = await post(http, gateway.url("faulty"), INIT, Origin="http://evil.example")
    assert status == 403 and body is not None and "Origin" in body["error"]["message"]
    status, body, _ = await post(http, gateway.url("faulty"), INIT, Host="evil.example")
    assert status == 421


async def test_unknown_server(gateway: RunningGateway, http: aiohttp.ClientSession) -> None:
    status, body, _ = await post(http, gateway.url("nosuch"), INIT)
    assert status == 404 and body is not None and "nosuch" in body["error"]["message"]


async def test_upstream_unreachable(gateway: RunningGateway, http: aiohttp.ClientSession) -> None:
    status, body, _ = await post(http, gateway.url("dead"), INIT)
    assert status == 200 and body is not None
    assert body["id"] == 1 and body["error"]["code"] == -32001 and "unreachable" in body["error"]["message"]
    recs = [r for r in load_records(gateway.store) if r["server"] == "dead" and r["kind"] == "error"]
    assert recs and recs[-1]["outcome"] == "upstream_failed"


@pytest.mark.parametrize(
    ("tool", "code", "words"),
    [
        ("garbage", -32002, "invalid message"),
        ("not_jsonrpc", -32002, "invalid message"),
        ("wrong_id", -32002, "without a response"),
        ("http_500", -32002, "HTTP 500"),
        ("die_mid_stream", -32001, "stream broke"),
    ],
)
async def test_faulty_upstream(
    gateway: RunningGateway, http: aiohttp.ClientSession, tool: str, code: int, words: str
) -> None:
    url = gateway.url("faulty")
    sid = await session(http, url)
    status, body, _ = await post(
        http, url, call(9, tool), **{"Mcp-Session-Id": sid, "MCP-Protocol-Version": "2025-11-25"}
    )
    assert status in (200, 500) and body is not None, body
    assert body["id"] == 9 and body["error"]["code"] == code and words in body["error"]["message"], body
    recs = [r for r in load_records(gateway.store) if r["session_id"] == sid and r["msg_id"] == "9"]
    assert [(r["direction"], r["kind"]) for r in recs] == [("c2s", "request"), ("s2c", "error")]
    assert recs[1]["outcome"] == "upstream_failed" and words in recs[1]["detail"]
    # the session is still usable afterwards
    status, body, _ = await post(
        http, url, call(10, "ok"), **{"Mcp-Session-Id": sid, "MCP-Protocol-Version": "2025-11-25"}
    )
    assert status == 200 and body is not None and body["result"]["content"][0]["text"] == "fine"


async def test_batches_are_relayed_in_2025_03_26(gateway: RunningGateway, http: aiohttp.ClientSession) -> None:
    url = gateway.url("faulty")
    init = {**INIT, "params": {**INIT["params"], "protocolVersion": "2025-03-26"}}
    status, _, headers = await post(http, url, init)
    assert status == 200
    h = {"Mcp-Session-Id": headers["Mcp-Session-Id"], "MCP-Protocol-Version": "2025-03-26"}
    batch = [call(21, "ok"), {"jsonrpc": "2.0", "method": "notifications/progress", "params": {}}, call(22, "garbage")]
    async with http.post(
        url, data=json.dumps(batch).encode(), headers={"Content-Type": "application/json", "Accept": ACCEPT, **h}
    ) as r:
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/event-stream")
        raw = await r.read()
    answers = {m["id"]: m for m in (json.loads(line[6:]) for line in raw.split(b"\n") if line.startswith(b"data: "))}
    assert answers[21]["result"]["content"][0]["text"] == "fine"
    assert answers[22]["error"]["code"] == -32002
    sid = h["Mcp-Session-Id"]
    recs = [r for r in load_records(gateway.store) if r["session_id"] == sid and r["direction"] == "c2s"]
    assert {r["msg_id"] for r in recs} >= {"21", "22"} and any(r["kind"] == "notification" for r in recs)


async def test_a_closed_stateless_stream_cancels_the_upstream_call(
    gateway: RunningGateway, http: aiohttp.ClientSession, faulty: ManagedProcess
) -> None:
    """2026-07-28: closing the response stream is how a client cancels; the gateway hangs up on the upstream too."""
    body = call(31, "slow_stream")
    body["params"]["_meta"] = {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
        "progressToken": "p31",
    }
    headers = {
        "Content-Type": "application/json",
        "Accept": ACCEPT,
        "MCP-Protocol-Version": "2026-07-28",
        "Mcp-Method": "tools/call",
        "Mcp-Name": "slow_stream",
    }
    async with http.post(gateway.url("faulty"), data=json.dumps(body).encode(), headers=headers) as r:
        assert r.status == 200
        first = await r.content.readline()
        assert first  # the stream is flowing; now walk away
    await eventually(
        lambda: "slow_stream:closed-by-client" in faulty_received(faulty), within=10, what="upstream hang-up"
    )
    assert "slow_stream:finished" not in faulty_received(faulty)
    await eventually(lambda: any(r["kind"] == "client_gone" for r in load_records(gateway.store)), within=10)


def faulty_received(faulty: ManagedProcess) -> list[str]:
    import urllib.request

    with urllib.request.urlopen(faulty.ready_value.removesuffix("/mcp") + "/received", timeout=5) as r:
        data: list[str] = json.loads(r.read())
        return data
