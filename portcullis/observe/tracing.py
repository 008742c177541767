"""OpenTelemetry traces: a SERVER span per client message at the edge, a CLIENT span per upstream request, the
caller's W3C trace context continued and passed on.

The context comes from the client's ``traceparent``/``tracestate`` HTTP headers or, failing those, from the
message's ``params._meta`` (where MCP SDKs put it); it goes upstream in the ``traceparent``/``tracestate`` headers
of the gateway's request (the message bytes are not rewritten for it). Spans carry the server's name, the MCP method,
the tool/resource/prompt name, the session id and, when known, the decision and outcome — never arguments, results,
tokens or the caller's identity.

Off unless ``tracing.endpoint`` is set; then nothing is created per request (one attribute check).
"""

from __future__ import annotations

import contextvars
import os
from collections.abc import Mapping, MutableMapping
from typing import Any

from portcullis.config.model import TracingConfig

_span: contextvars.ContextVar[Any] = contextvars.ContextVar("portcullis_span", default=None)


class Tracing:
    """The gateway's tracer, or a disabled stand-in (``enabled`` False: every method returns at once)."""

    def __init__(self, cfg: TracingConfig) -> None:
        self.enabled = cfg.endpoint is not None
        self._provider: Any = None
        self._tracer: Any = None
        if not self.enabled:
            return
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        headers = {h: os.environ.get(env, "") for h, env in cfg.headers_from_env.items()}
        self._provider = TracerProvider(
            resource=Resource.create({"service.name": cfg.service_name}),
            sampler=ParentBased(TraceIdRatioBased(cfg.sample_ratio)),
        )
        self._provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=cfg.endpoint, headers=headers, timeout=10))
        )
        self._tracer = self._provider.get_tracer("portcullis")
        self._prop = TraceContextTextMapPropagator()

    def start_server(self, name: str, headers: Mapping[str, str], meta: Any, attributes: dict[str, Any]) -> Any:
        """A SERVER span continuing the caller's context (headers first, then ``_meta``); it becomes current for
        what this request does next (the upstream call's CLIENT span is its child). ``end_server`` ends it."""
        if not self.enabled:
            return None
        from opentelemetry.trace import SpanKind

        carrier = {k.lower(): v for k, v in headers.items() if k.lower() in ("traceparent", "tracestate")}
        if "traceparent" not in carrier and isinstance(meta, dict) and isinstance(meta.get("traceparent"), str):
            carrier = {"traceparent": meta["traceparent"]}
            if isinstance(meta.get("tracestate"), str):
                carrier["tracestate"] = meta["tracestate"]
        ctx = self._prop.extract(carrier)
        span = self._tracer.start_span(name, context=ctx, kind=SpanKind.SERVER, attributes=_clean(attributes))
        token = _span.set(span)
        return (span, token)

    def annotate(self, **attributes: Any) -> None:
        if not self.enabled:
            return
        span = _span.get()
        if span is not None:
            span.set_attributes(_clean(attributes))

    def end_server(self, handle: Any, status: int) -> None:
        if handle is None:
            return
        span, token = handle
        from opentelemetry.trace import Status, StatusCode

        span.set_attribute("http.response.status_code", status)
        if status >= 500:
            span.set_status(Status(StatusCode.ERROR))
        span.end()
        _span.reset(token)

    def client(self, server: str, method: str, headers: MutableMapping[str, str]) -> Any:
        """A CLIENT span for one upstream request, its context injected into ``headers``; end it with ``.end()``."""
        if not self.enabled:
            return None
        parent = _span.get()
        if parent is None:
            return None
        from opentelemetry import trace
        from opentelemetry.trace import SpanKind

        ctx = trace.set_span_in_context(parent)
        span = self._tracer.start_span(
            f"upstream {method}", context=ctx, kind=SpanKind.CLIENT, attributes={"mcp.server": server}
        )
        self._prop.inject(headers, context=trace.set_span_in_context(span))
        return span

    def shutdown(self) -> None:
        if self._provider is not None:
            self._provider.shutdown()


def _clean(attrs: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in attrs.items() if v is not None and isinstance(v, str | int | float | bool)}


DISABLED = Tracing(TracingConfig())
_current: Tracing = DISABLED


def install(t: Tracing) -> None:
    global _current
    _current = t


def current() -> Tracing:
    return _current
