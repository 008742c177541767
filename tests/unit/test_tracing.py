"""Tracing switched off costs nothing per request: no span objects, no headers touched."""

from __future__ import annotations

from portcullis.config.model import TracingConfig
from portcullis.observe.tracing import Tracing


def test_off_means_no_spans_and_no_headers() -> None:
    t = Tracing(TracingConfig())
    headers = {"Accept": "application/json"}
    assert not t.enabled
    caller = {"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"}
    assert t.start_server("mcp tools/call", caller, None, {}) is None
    assert t.client("up", "POST", headers) is None and headers == {"Accept": "application/json"}
    t.annotate(x=1)
    t.end_server(None, 200)
