"""Traces and JSON logs of a real gateway: a client request carrying a W3C trace context (in its headers, or in
`_meta`) yields a SERVER span in that trace and a CLIENT child, exported to a local OTLP receiver; the upstream
receives the same trace id; a JSON log line of the request carries its session and trace ids."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.gateway import RunningGateway, write_config
from tests.support.procs import ManagedProcess, running_process, start_process
from tests.support.raw import ACCEPT, final_message, initialize
from tests.support.waiting import eventually

pytestmark = pytest.mark.e2e

FAULTY = Path(__file__).resolve().parents[1] / "fixtures" / "faulty_upstream.py"
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


class Traces:
    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        rec = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

                req = ExportTraceServiceRequest()
                req.ParseFromString(self.rfile.read(int(self.headers["Content-Length"])))
                for rs in req.resource_spans:
                    for ss in rs.scope_spans:
                        for sp in ss.spans:
                            rec.spans.append(
                                {
                                    "name": sp.name,
                                    "kind": sp.kind,
                                    "trace": sp.trace_id.hex(),
                                    "id": sp.span_id.hex(),
                                    "parent": sp.parent_span_id.hex(),
                                    "attrs": {a.key: a.value.string_value or a.value.int_value for a in sp.attributes},
                                }
                            )
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/traces"


@pytest.fixture
def faulty() -> Iterator[ManagedProcess]:
    with running_process([sys.executable, str(FAULTY), "--port", "0"], ready_timeout=30) as proc:
        yield proc


def start_gateway(faulty: ManagedProcess, tmp_path: Path, traces: Traces) -> RunningGateway:
    config, store = write_config(tmp_path, {"up": {"url": faulty.ready_value}}, tracing={"endpoint": traces.url})
    argv = [sys.executable, "-m", "portcullis", "serve", "--config", str(config)]
    proc = start_process([*argv, "--log-format", "json", "--log-level", "debug"], ready_timeout=30)
    return RunningGateway(proc, proc.ready_value, config, store)


async def upstream_view(http: aiohttp.ClientSession, faulty: ManagedProcess, what: str) -> list[Any]:
    async with http.get(faulty.ready_value.removesuffix("/mcp") + "/" + what) as r:
        seen: list[Any] = await r.json()
        return seen


async def test_a_callers_trace_continues_through_the_gateway_to_the_upstream(
    faulty: ManagedProcess, tmp_path: Path
) -> None:
    traces = Traces()
    gw = start_gateway(faulty, tmp_path, traces)
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
            h = {"Content-Type": "application/json", "Accept": ACCEPT, "traceparent": f"00-{TRACE}-00f067aa0ba902b7-01"}
            async with http.post(gw.url("up"), json=initialize(), headers=h) as r:
                await r.read()
                sid = r.headers["Mcp-Session-Id"]
            h = {
                "Content-Type": "application/json",
                "Accept": ACCEPT,
                "Mcp-Session-Id": sid,
                "MCP-Protocol-Version": "2025-11-25",
            }
            meta_trace = "0af7651916cd43dd8448eb211c80319c"
            call = {
                "jsonrpc": "2.0",
                "id": 2,
                "method": "tools/call",
                "params": {
                    "name": "ok",
                    "arguments": {},
                    "_meta": {"traceparent": f"00-{meta_trace}-b7ad6b7169203331-01"},
                },
            }
            async with http.post(gw.url("up"), json=call, headers=h) as r:
                assert "result" in json.loads(final_message(await r.read(), r.headers.get("Content-Type", "")))
            upstream_saw = await upstream_view(http, faulty, "traceparents")
            upstream_meta = await upstream_view(http, faulty, "meta_traceparents")
    finally:
        gw.proc.stop(timeout=15)  # a clean shutdown flushes the spans
    assert any(tp and tp.split("-")[1] == TRACE for tp in upstream_saw), upstream_saw
    assert any(tp and tp.split("-")[1] == meta_trace for tp in upstream_saw), upstream_saw
    # the client's bytes went upstream untouched: its own _meta context, beside the gateway's in the header
    assert upstream_meta[-1] == call["params"]["_meta"]["traceparent"], upstream_meta  # type: ignore[index]
    await eventually(lambda: len(traces.spans) >= 4, 10, "the spans to be exported")
    server = [s for s in traces.spans if s["kind"] == 2]  # SPAN_KIND_SERVER
    client = [s for s in traces.spans if s["kind"] == 3]  # SPAN_KIND_CLIENT
    init = next(s for s in server if s["name"] == "mcp initialize")
    assert init["trace"] == TRACE and init["parent"] == "00f067aa0ba902b7" and init["attrs"]["mcp.server"] == "up"
    tool = next(s for s in server if s["name"] == "mcp tools/call")
    assert tool["trace"] == meta_trace and tool["attrs"]["mcp.name"] == "ok" and tool["attrs"]["mcp.session.id"] == sid
    assert tool["attrs"]["portcullis.outcome"] == "ok" and tool["attrs"]["http.response.status_code"] == 200
    assert init["attrs"]["mcp.session.id"] == sid  # minted while the initialize was handled
    assert any(c["trace"] == meta_trace and c["parent"] == tool["id"] for c in client)
    everything = json.dumps(traces.spans)
    assert "arguments" not in everything and "Bearer" not in everything
    lines = [json.loads(ln) for ln in gw.proc.output().splitlines() if ln.startswith("{")]
    mine = [ln for ln in lines if ln.get("session_id") == sid and ln.get("trace_id") == meta_trace]
    assert mine, lines[-5:]
    assert all({"ts", "level", "logger", "message", "request_id", "server"} <= set(ln) for ln in mine), mine
    assert mine[0]["server"] == "up"


async def test_a_request_the_gateway_rebuilds_carries_its_context_in_meta_too(
    faulty: ManagedProcess, tmp_path: Path
) -> None:
    """A 2026-07-28 client of this session-era upstream goes through a session the gateway holds: the request is
    rebuilt anyway (gateway ids), so the context the client put in `_meta` becomes the gateway's CLIENT span's."""
    traces = Traces()
    gw = start_gateway(faulty, tmp_path, traces)
    meta_trace = "5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e"
    call = {
        "jsonrpc": "2.0",
        "id": 9,
        "method": "tools/call",
        "params": {
            "name": "ok",
            "arguments": {},
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": {},
                "traceparent": f"00-{meta_trace}-b7ad6b7169203331-01",
            },
        },
    }
    h = {
        "Content-Type": "application/json",
        "Accept": ACCEPT,
        "MCP-Protocol-Version": "2026-07-28",
        "Mcp-Method": "tools/call",
        "Mcp-Name": "ok",
    }
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
            async with http.post(gw.url("up"), json=call, headers=h) as r:
                answer = json.loads(final_message(await r.read(), r.headers.get("Content-Type", "")))
                assert answer["id"] == 9 and "result" in answer, answer
            headers_saw = await upstream_view(http, faulty, "traceparents")
            meta_saw = await upstream_view(http, faulty, "meta_traceparents")
    finally:
        gw.proc.stop(timeout=15)
    assert meta_saw[-1] == headers_saw[-1] and meta_saw[-1].split("-")[1] == meta_trace, (meta_saw, headers_saw)
    assert meta_saw[-1] != call["params"]["_meta"]["traceparent"]  # type: ignore[index]
    assert all(m is None for m in meta_saw[:-1]), meta_saw  # the gateway's own initialize: no _meta context added
    # the CLIENT span of that request (the era probe and the shared session's set-up have CLIENT spans of their own)
    span_id = meta_saw[-1].split("-")[2]
    await eventually(lambda: any(s["id"] == span_id for s in traces.spans), 10, "the CLIENT span")
    (client,) = [s for s in traces.spans if s["id"] == span_id]
    (server,) = [s for s in traces.spans if s["kind"] == 2 and s["trace"] == meta_trace]
    assert client["kind"] == 3 and client["trace"] == meta_trace and client["parent"] == server["id"]
