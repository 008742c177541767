"""Prometheus metrics, counted from the audit trail itself.

Every request, decision, masking and gateway event already becomes a record; the store writer tells
:class:`TrailMetrics` what it committed (on its own thread, once per batch), so the event loop pays nothing per call
and the figures agree with the trail by construction. What is never recorded — the store failing, the exports, the
live sessions — is read when Prometheus scrapes (:class:`GatewayCollector`).

Label sets are bounded: ``server`` is a configured server name (anything else, e.g. a path someone probed, counts as
``other``), ``method`` an MCP method the gateway knows (else ``other``), ``class`` a masking class or a configured
rule, ``kind`` a gateway event kind from the code. No label ever holds a caller, an argument, a token or a payload.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from portcullis.flow import Record

METHODS = frozenset(
    {
        "initialize",
        "ping",
        "tools/list",
        "tools/call",
        "resources/list",
        "resources/read",
        "resources/templates/list",
        "resources/subscribe",
        "resources/unsubscribe",
        "prompts/list",
        "prompts/get",
        "completion/complete",
        "logging/setLevel",
        "sampling/createMessage",
        "elicitation/create",
        "roots/list",
        "server/discover",
        "tasks/get",
        "tasks/result",
        "tasks/list",
        "tasks/cancel",
    }
)
# request latency buckets (seconds): sub-millisecond gateway answers up to slow tools and held calls
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
OTHER = "other"


class TrailMetrics:
    """Counters fed from committed records (a :class:`portcullis.store.writer.CommitListener`)."""

    needs_seq = False

    def __init__(self, registry: CollectorRegistry, servers: Iterable[str], classes: Iterable[str]) -> None:
        self.servers = frozenset(servers)
        self.classes = frozenset(classes)
        self.requests = Counter(
            "portcullis_requests",
            "Client requests answered, by server, method and outcome (ok, error, denied, failed, upstream_failed)",
            ["server", "method", "outcome"],
            registry=registry,
        )
        self.latency = Histogram(
            "portcullis_request_duration_seconds",
            "Time from a client request's arrival to its response, by server and method",
            ["server", "method"],
            buckets=BUCKETS,
            registry=registry,
        )
        self.decisions = Counter(
            "portcullis_policy_decisions",
            "Policy decisions on answered requests, by server and effect (allow, deny, hold)",
            ["server", "decision"],
            registry=registry,
        )
        self.masked = Counter(
            "portcullis_masked_values",
            "Values masked in responses, by server and class",
            ["server", "class"],
            registry=registry,
        )
        self.events = Counter(
            "portcullis_gateway_events",
            "Gateway events in the trail (sessions, rejections, approvals, upstream faults, policy reloads)",
            ["kind"],
            registry=registry,
        )
        self._children: dict[tuple[Any, ...], Any] = {}  # labels() lookups cached (the writer thread only)
        self._lock = threading.Lock()

    def _server(self, name: str) -> str:
        return name if name in self.servers else OTHER

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def committed(self, records: Sequence[Record]) -> None:
        with self._lock:
            for r in records:
                if r.direction == "s2c" and r.latency_us is not None:  # the answer to a client's request
                    server = self._server(r.server)
                    method = r.method if r.method in METHODS else OTHER
                    self._child(self.requests, server, method, r.outcome or "ok").inc()
                    self._child(self.latency, server, method).observe(r.latency_us / 1e6)
                    if r.decision is not None:
                        self._child(self.decisions, server, r.decision).inc()
                    if r.masked:
                        self._count_masked(server, r.masked)
                elif r.direction == "gw":
                    self._child(self.events, r.kind if r.kind.isidentifier() and len(r.kind) <= 40 else OTHER).inc()

    def _count_masked(self, server: str, masked: str) -> None:
        try:
            hits = orjson.loads(masked)
        except orjson.JSONDecodeError:
            return
        for h in hits if isinstance(hits, list) else ():
            cls = h.get("class") if isinstance(h, dict) else None
            n = h.get("count", 1) if isinstance(h, dict) else 1
            label = cls if cls in self.classes else OTHER
            self._child(self.masked, server, label).inc(n if isinstance(n, int) and n > 0 else 1)

    def checkpointed(self, checkpoint: Any) -> None:
        return None


class GatewayCollector(Collector):
    """What is read at scrape time: the store's health and counters, live sessions, exports."""

    def __init__(self, read: Callable[[], dict[str, Any]]) -> None:
        self._read = read

    def collect(self) -> Iterable[Any]:
        s = self._read()
        yield GaugeMetricFamily("portcullis_store_healthy", "1 while the recording store takes writes", s["healthy"])
        yield CounterMetricFamily("portcullis_store_records", "Records committed by this gateway", s["written"])
        yield CounterMetricFamily("portcullis_store_batches", "Store transactions (group commits)", s["batches"])
        yield CounterMetricFamily(
            "portcullis_store_failures", "Failed store transactions (their messages were refused)", s["failures"]
        )
        yield GaugeMetricFamily("portcullis_sessions_active", "Open MCP sessions on this gateway", s["sessions"])
        yield GaugeMetricFamily("portcullis_draining", "1 while the gateway drains for shutdown", s["draining"])
        agents = s.get("agents") or []
        up = GaugeMetricFamily(
            "portcullis_agent_connections", "Agent tunnels connected to this gateway, by agent", labels=["agent"]
        )
        streams = CounterMetricFamily("portcullis_agent_streams", "Exchanges carried by each agent", labels=["agent"])
        traffic = CounterMetricFamily(
            "portcullis_agent_tunnel_bytes", "Bytes through each agent's tunnel", labels=["agent", "direction"]
        )
        failures = CounterMetricFamily(
            "portcullis_agent_local_failures",
            "Exchanges the agent could not complete with its local server (the agent's own count)",
            labels=["agent"],
        )
        for a in agents:
            name = a["agent"]
            up.add_metric([name], a.get("connections", 0))
            streams.add_metric([name], a.get("streams", 0))
            traffic.add_metric([name, "in"], a.get("bytes_in", 0))
            traffic.add_metric([name, "out"], a.get("bytes_out", 0))
            failures.add_metric([name], a.get("failures", 0))
        yield from (up, streams, traffic, failures)
        exports = s.get("exports") or []
        if exports:
            delivered = CounterMetricFamily(
                "portcullis_audit_export_delivered", "Records delivered by each audit export", labels=["sink"]
            )
            dropped = CounterMetricFamily(
                "portcullis_audit_export_dropped",
                "Records an audit export could not deliver (buffer overflow, refused, abandoned at shutdown)",
                labels=["sink"],
            )
            pending = GaugeMetricFamily(
                "portcullis_audit_export_pending", "Records waiting in each audit export's buffer", labels=["sink"]
            )
            for e in exports:
                delivered.add_metric([e["sink"]], e.get("delivered", 0))
                dropped.add_metric([e["sink"]], e.get("dropped", 0))
                pending.add_metric([e["sink"]], e.get("pending", 0))
            yield from (delivered, dropped, pending)
