"""Traces and JSON log lines without sockets: the caller's W3C context is continued from its headers or, failing
those, from ``_meta``; the upstream request carries the gateway's CLIENT span in its headers (and in ``_meta`` only
where the gateway builds the request anyway and the client put a context there); spans carry only allow-listed
attributes; tracing switched off creates nothing and imports nothing."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from portcullis.config.model import TracingConfig
from portcullis.observe import logs
from portcullis.observe.tracing import SPAN_ATTRIBUTES, Tracing, target, with_trace_meta

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
CALLER = f"00-{TRACE}-{PARENT}-01"
META_TRACE = "0af7651916cd43dd8448eb211c80319c"
META_CALLER = f"00-{META_TRACE}-b7ad6b7169203331-01"


@pytest.fixture
def spans() -> Iterator[tuple[Tracing, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    t = Tracing(TracingConfig(), exporter=exporter)
    yield t, exporter
    t.shutdown()


def one_call(t: Tracing, headers: dict[str, str], meta: Any = None, **attrs: Any) -> dict[str, str]:
    """A SERVER span around one upstream request (a CLIENT span); returns the upstream request's headers."""
    handle = t.start_server("mcp tools/call", headers, meta, {"mcp.server": "up", "mcp.method": "tools/call", **attrs})
    upstream = {"Accept": "application/json"}
    client = t.client("up", "POST", upstream)
    assert client is not None
    client.end()
    t.end_server(handle, 200)
    return upstream


def test_the_callers_context_is_continued_from_its_headers(spans: tuple[Tracing, InMemorySpanExporter]) -> None:
    t, exporter = spans
    one_call(t, {"Traceparent": CALLER, "tracestate": "vendor=1"}, {"traceparent": META_CALLER})
    client, server = exporter.get_finished_spans()
    assert server.kind is SpanKind.SERVER and server.name == "mcp tools/call"
    assert f"{server.context.trace_id:032x}" == TRACE  # the header wins over _meta
    assert server.parent is not None and f"{server.parent.span_id:016x}" == PARENT and server.parent.is_remote
    assert client.kind is SpanKind.CLIENT and client.parent is not None
    assert client.parent.span_id == server.context.span_id and client.context.trace_id == server.context.trace_id


def test_the_callers_context_is_taken_from_meta_without_headers(spans: tuple[Tracing, InMemorySpanExporter]) -> None:
    t, exporter = spans
    one_call(t, {"Accept": "application/json"}, {"traceparent": META_CALLER, "progressToken": 1})
    _, server = exporter.get_finished_spans()
    assert f"{server.context.trace_id:032x}" == META_TRACE


def test_no_or_garbled_context_starts_a_new_trace(spans: tuple[Tracing, InMemorySpanExporter]) -> None:
    t, exporter = spans
    one_call(t, {"traceparent": "00-zz-not-a-context"}, {"traceparent": 42})
    one_call(t, {}, None)
    for span in exporter.get_finished_spans():
        assert span.kind is not SpanKind.SERVER or span.parent is None


def test_the_upstream_gets_the_gateways_client_span_in_its_headers(
    spans: tuple[Tracing, InMemorySpanExporter],
) -> None:
    t, exporter = spans
    upstream = one_call(t, {"traceparent": CALLER, "tracestate": "vendor=1"})
    client, _ = exporter.get_finished_spans()
    version, trace, parent, flags = upstream["traceparent"].split("-")
    assert (version, trace, parent, flags) == ("00", TRACE, f"{client.context.span_id:016x}", "01")
    assert upstream["tracestate"] == "vendor=1" and upstream["Accept"] == "application/json"


def test_a_context_already_in_the_upstream_headers_is_replaced(spans: tuple[Tracing, InMemorySpanExporter]) -> None:
    t, _ = spans
    handle = t.start_server("mcp ping", {"traceparent": CALLER}, None, {})
    upstream = {"Traceparent": META_CALLER, "TraceState": "evil=1"}
    client = t.client("up", "POST", upstream)
    assert client is not None
    client.end()
    t.end_server(handle, 200)
    assert set(upstream) == {"traceparent"} and upstream["traceparent"].split("-")[1] == TRACE


def test_a_callers_unsampled_flag_is_followed_and_passed_on() -> None:
    exporter = InMemorySpanExporter()
    t = Tracing(TracingConfig(sample_ratio=1.0), exporter=exporter)
    upstream = one_call(t, {"traceparent": f"00-{TRACE}-{PARENT}-00"})
    assert exporter.get_finished_spans() == () and upstream["traceparent"].endswith("-00")
    t = Tracing(TracingConfig(sample_ratio=0.0), exporter=exporter)
    one_call(t, {"traceparent": CALLER})  # sampled by the caller although new traces are not
    assert len(exporter.get_finished_spans()) == 2


def test_spans_carry_only_allow_listed_attributes(spans: tuple[Tracing, InMemorySpanExporter]) -> None:
    t, exporter = spans
    handle = t.start_server(
        "mcp tools/call",
        {},
        None,
        {
            "mcp.server": "up",
            "mcp.method": "tools/call",
            "mcp.name": "search",
            "mcp.session.id": "s1",
            "mcp.arguments": '{"password": "hunter2"}',
            "enduser.id": "alice",
            "http.request.header.authorization": "Bearer secret",
            "jsonrpc.id": 7,
        },
    )
    t.end_server(
        handle,
        502,
        {"portcullis.decision": "allow", "portcullis.outcome": "upstream_failed", "result": "secret", "x": None},
    )
    (span,) = exporter.get_finished_spans()
    assert set(span.attributes or {}) <= SPAN_ATTRIBUTES
    assert dict(span.attributes or {}) == {
        "mcp.server": "up",
        "mcp.method": "tools/call",
        "mcp.name": "search",
        "mcp.session.id": "s1",
        "portcullis.decision": "allow",
        "portcullis.outcome": "upstream_failed",
        "http.response.status_code": 502,
    }
    assert not span.status.is_ok


def test_a_resource_uri_is_named_without_user_info_query_or_fragment() -> None:
    assert target({"name": "search", "arguments": {"q": "x"}}) == "search"
    assert target({"uri": "https://bob:pw@example.com/a/b?token=s3cret#frag"}) == "https://example.com/a/b"
    assert target({"uri": "file:///etc/hosts"}) == "file:///etc/hosts"
    assert target({"uri": "test://static-text"}) == "test://static-text"
    assert target({"uri": 5}) is None and target({}) is None
    assert len(target({"name": "n" * 10_000}) or "") == 256


def test_meta_is_updated_only_in_a_built_request_that_carried_a_context() -> None:
    headers = {"traceparent": f"00-{TRACE}-1111111111111111-01", "tracestate": "a=1"}
    params: dict[str, Any] = {"name": "t", "_meta": {"x": 1}}
    body = {"jsonrpc": "2.0", "id": "g-1", "method": "tools/call", "params": params}
    assert with_trace_meta(body, headers) is None  # no context in _meta: the request is left alone
    params["_meta"] = {"x": 1, "traceparent": META_CALLER, "tracestate": "old=1"}
    out = orjson.loads(with_trace_meta(body, headers) or b"")
    assert out["params"]["_meta"] == {"x": 1, "traceparent": headers["traceparent"], "tracestate": "a=1"}
    assert out["params"]["name"] == "t" and out["id"] == "g-1"
    assert with_trace_meta(body, {}) is None  # nothing injected (tracing off): nothing changes


def test_off_means_no_spans_and_no_headers() -> None:
    t = Tracing(TracingConfig())
    headers = {"Accept": "application/json"}
    assert not t.enabled
    caller = {"traceparent": CALLER}
    assert t.start_server("mcp tools/call", caller, None, {}) is None
    assert t.client("up", "POST", headers) is None and headers == {"Accept": "application/json"}
    t.end_server(None, 200, {"portcullis.outcome": "ok"})


def test_off_imports_no_tracing_sdk_at_all() -> None:
    """The gateway's modules, with tracing off, never load the OpenTelemetry API or SDK: no span can exist."""
    code = """
import sys
import portcullis.server.app, portcullis.server.mcp_endpoint, portcullis.upstream.http, portcullis.tunnel.hub
from portcullis.config.model import TracingConfig
from portcullis.observe.tracing import Tracing, current
t = Tracing(TracingConfig())
CALLER = "CALLER_VALUE"
h = {}
assert t.start_server("mcp ping", {"traceparent": CALLER}, None, {}) is None
assert current().client("up", "POST", h) is None and h == {}
loaded = sorted(m for m in sys.modules if m.startswith(("opentelemetry.sdk", "opentelemetry.trace")))
assert not loaded, loaded
""".replace("CALLER_VALUE", CALLER)
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_json_log_lines_carry_the_requests_ids(
    spans: tuple[Tracing, InMemorySpanExporter], capsys: pytest.CaptureFixture[str]
) -> None:
    t, _ = spans
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        logs.setup("info", "json")
        token = logs.LOG_CONTEXT.set({"request_id": "r1", "server": "up", "session_id": "s1"})
        handle = t.start_server("mcp tools/call", {"traceparent": CALLER}, None, {})
        logging.getLogger("portcullis.mcp").info("up %s", "tools/call")
        t.end_server(handle, 200)
        logs.LOG_CONTEXT.reset(token)
        logging.getLogger("portcullis").warning("outside a request")
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
        logs.JSON_LINES[0] = False
    inside, outside = (json.loads(line) for line in capsys.readouterr().err.splitlines())
    assert {k: inside[k] for k in ("level", "logger", "message", "request_id", "server", "session_id")} == {
        "level": "INFO",
        "logger": "portcullis.mcp",
        "message": "up tools/call",
        "request_id": "r1",
        "server": "up",
        "session_id": "s1",
    }
    assert inside["trace_id"] == TRACE and inside["ts"]
    assert outside["message"] == "outside a request" and "trace_id" not in outside and "session_id" not in outside
