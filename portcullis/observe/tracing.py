"""OpenTelemetry traces: a SERVER span per client message at the edge, a CLIENT span per upstream request, the
caller's W3C trace context continued and passed on.

The context comes from the client's ``traceparent``/``tracestate`` HTTP headers or, failing those, from the
message's ``params._meta`` (where MCP SDKs put it); it goes upstream in the ``traceparent``/``tracestate`` headers
of the gateway's request. The client's bytes are not rewritten for it: only a request the gateway builds anyway (era
translation) gets its ``_meta`` trace context updated, and only when the client put one there.

Spans carry only the attributes in :data:`SPAN_ATTRIBUTES`: the server's name, the MCP method, the tool/prompt name
or resource URI (without user info, query or fragment), the gateway's session id and, when known, the decision and
outcome — never arguments, results, tokens, JSON-RPC ids or the caller's identity.

Off unless ``tracing.endpoint`` is set; then nothing is created per request (one attribute check), and the
OpenTelemetry SDK is not even imported.
"""

from __future__ import annotations

import contextvars
import os
from collections.abc import Mapping, MutableMapping
from typing import Any

import orjson

from portcullis.config.model import TracingConfig

_span: contextvars.ContextVar[Any] = contextvars.ContextVar("portcullis_span", default=None)

SPAN_ATTRIBUTES = frozenset(
    {
        "mcp.server",
        "mcp.method",
        "mcp.name",
        "mcp.session.id",
        "portcullis.decision",
        "portcullis.outcome",
        "http.response.status_code",
    }
)
TRACE_KEYS = ("traceparent", "tracestate")
MAX_NAME = 256


class Tracing:
    """The gateway's tracer, or a disabled stand-in (``enabled`` False: every method returns at once).

    ``exporter`` (tests): spans go to it one by one instead of to the OTLP endpoint in batches.
    """

    def __init__(self, cfg: TracingConfig, exporter: Any = None) -> None:
        self.enabled = cfg.endpoint is not None or exporter is not None
        self._provider: Any = None
        self._tracer: Any = None
        if not self.enabled:
            return
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self._provider = TracerProvider(
            resource=Resource.create({"service.name": cfg.service_name}),
            sampler=ParentBased(TraceIdRatioBased(cfg.sample_ratio)),
        )
        if exporter is not None:
            self._provider.add_span_processor(SimpleSpanProcessor(exporter))
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            headers = {h: os.environ.get(env, "") for h, env in cfg.headers_from_env.items()}
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

        carrier = {k.lower(): v for k, v in headers.items() if k.lower() in TRACE_KEYS}
        if "traceparent" not in carrier:
            carrier = meta_context(meta) or {}
        ctx = self._prop.extract(carrier)
        span = self._tracer.start_span(name, context=ctx, kind=SpanKind.SERVER, attributes=allowed(attributes))
        token = _span.set(span)
        return (span, token)

    def end_server(self, handle: Any, status: int, attributes: dict[str, Any] | None = None) -> None:
        """End the span ``start_server`` returned (None: nothing to end), with what became known meanwhile."""
        if handle is None:
            return
        span, token = handle
        from opentelemetry.trace import Status, StatusCode

        if attributes:
            span.set_attributes(allowed(attributes))
        span.set_attribute("http.response.status_code", status)
        if status >= 500:
            span.set_status(Status(StatusCode.ERROR))
        span.end()
        _span.reset(token)

    def client(self, server: str, method: str, headers: MutableMapping[str, str]) -> Any:
        """A CLIENT span for one upstream request, its context injected into ``headers`` (``traceparent``, and
        ``tracestate`` when the caller sent one); end it with ``.end()``. None when off or outside a request."""
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
        for k in [k for k in headers if k.lower() in TRACE_KEYS]:  # only the gateway's context goes upstream
            del headers[k]
        self._prop.inject(headers, context=trace.set_span_in_context(span))
        return span

    def shutdown(self) -> None:
        if self._provider is not None:
            self._provider.shutdown()


def allowed(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """The attributes a span may carry: named in SPAN_ATTRIBUTES, scalar, set."""
    return {
        k: v for k, v in attrs.items() if k in SPAN_ATTRIBUTES and v is not None and isinstance(v, str | int | float)
    }


def meta_context(meta: Any) -> dict[str, str] | None:
    """The W3C trace context a message carries in ``params._meta`` (``traceparent``, maybe ``tracestate``)."""
    if not isinstance(meta, dict):
        return None
    tp = meta.get("traceparent")
    if not isinstance(tp, str):
        return None
    ts = meta.get("tracestate")
    return {"traceparent": tp, "tracestate": ts} if isinstance(ts, str) else {"traceparent": tp}


def target(params: Mapping[str, Any]) -> str | None:
    """The span's ``mcp.name``: a tool or prompt name, or a resource URI without user info, query or fragment."""
    name = params.get("name")
    if isinstance(name, str):
        return name[:MAX_NAME]
    uri = params.get("uri")
    if not isinstance(uri, str):
        return None
    uri = uri.split("#", 1)[0].split("?", 1)[0]
    scheme, sep, rest = uri.partition("://")
    if sep:
        authority, slash, path = rest.partition("/")
        uri = f"{scheme}://{authority.rpartition('@')[2]}{slash}{path}"
    return uri[:MAX_NAME]


def with_trace_meta(body: Mapping[str, Any], headers: Mapping[str, str]) -> bytes | None:
    """A request the gateway built (era translation), its ``params._meta`` trace context set to the one injected in
    ``headers`` — only when it carries one already (the client's); None otherwise (the bytes stay as they are)."""
    params = body.get("params")
    meta = params.get("_meta") if isinstance(params, dict) else None
    if not isinstance(params, dict) or meta_context(meta) is None or "traceparent" not in headers:
        return None
    assert isinstance(meta, dict)
    new_meta = {k: v for k, v in meta.items() if k not in TRACE_KEYS}
    new_meta.update({k: headers[k] for k in TRACE_KEYS if k in headers})
    return orjson.dumps({**body, "params": {**params, "_meta": new_meta}})


DISABLED = Tracing(TracingConfig())
_current: Tracing = DISABLED


def install(t: Tracing) -> None:
    global _current
    _current = t


def current() -> Tracing:
    return _current
