"""Streaming the audit trail to where audit teams look: JSON-lines files, an OpenTelemetry logs endpoint, a webhook.

The store writer tells the :class:`Exporter` what it committed (records, with the sequence numbers the store gave
them, and signed checkpoints) on its own thread, after each batch; the exporter hands each sink the batch (a lock
and an append per sink: no encoding, no I/O), and each sink delivers from its own daemon thread, so a slow or dead
destination never holds up the writer, the event loop or the other sinks. The store stays the source of truth.

Delivery is **at least once, in commit order**: a batch leaves a sink's buffer only when the destination
acknowledged it (a written file, an HTTP 2xx); failures are retried with exponential backoff (capped by
``retry_max``) for as long as it takes. A destination may see a batch again when it kept one but its answer was lost:
consumers deduplicate by ``(chain, seq)`` or ``hash``. What is not delivered is counted (``dropped``): records
pushed out of a full buffer (the oldest go first), batches a destination refused for good (HTTP 4xx other than 408
and 429) or partly rejected (OTLP partial success), and what was still buffered when :meth:`Exporter.close` ran out
of time. :meth:`Exporter.stats` has the counters per sink, and the last error as a type name or an HTTP status
(never a URL, a header or a payload); the metrics and ``GET /admin/api/audit/exports`` read them.

Modules: :mod:`.base` (the buffer, the thread, retries, counters), :mod:`.jsonl`, :mod:`.http` (webhook, and the
POST both HTTP sinks use), :mod:`.otlp` (the LogRecord mapping).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from portcullis.audit.export.base import Item, Refused, Sink, Unavailable
from portcullis.audit.export.http import WebhookSink
from portcullis.audit.export.jsonl import JsonlSink
from portcullis.audit.export.otlp import OtlpSink, otlp_request
from portcullis.config.model import ExportSink, JsonlExport, OtlpExport
from portcullis.flow import Record

__all__ = [
    "Exporter",
    "Item",
    "JsonlSink",
    "OtlpSink",
    "Refused",
    "Sink",
    "Unavailable",
    "WebhookSink",
    "build_exporter",
    "otlp_request",
]


class Exporter:
    """The store writer's commit listener (:class:`portcullis.store.writer.CommitListener`): fans out to the sinks."""

    needs_seq = True  # the exports carry the seq the store gave each record

    def __init__(self, sinks: Sequence[Sink]) -> None:
        self.sinks = tuple(sinks)

    def committed(self, records: Sequence[Record]) -> None:
        items: list[Item] = [("record", r) for r in records]
        for s in self.sinks:
            s.offer(items)

    def checkpointed(self, checkpoint: Any) -> None:
        item: list[Item] = [("checkpoint", checkpoint)]
        for s in self.sinks:
            s.offer(item)

    def start(self) -> None:
        for s in self.sinks:
            s.start()

    def close(self, timeout: float = 5.0) -> None:
        """Deliver what is buffered within ``timeout`` seconds (all sinks at once), then count the rest as dropped.
        Call it after the store writer is closed, so its last records and the shutdown checkpoint go out too."""
        deadline = time.monotonic() + timeout
        for s in self.sinks:
            s.request_stop(deadline)
        for s in self.sinks:
            s.close(deadline)

    def stats(self) -> list[dict[str, Any]]:
        """One dict per sink: sink, type, delivered, dropped, failures, pending, last_error."""
        return [s.stats() for s in self.sinks]


def build_exporter(sinks: Sequence[ExportSink]) -> Exporter | None:
    """The exporter for ``recording.export`` (None when it is empty). Sinks are named ``<type>-<index>`` (the
    ``sink`` label of the metrics). Raises ConfigError for an unset environment variable it names."""
    out: list[Sink] = []
    for i, cfg in enumerate(sinks):
        name, where = f"{cfg.type}-{i}", f"recording.export[{i}]"
        if isinstance(cfg, JsonlExport):
            out.append(JsonlSink(name, cfg))
        elif isinstance(cfg, OtlpExport):
            out.append(OtlpSink(name, cfg, where))
        else:
            out.append(WebhookSink(name, cfg, where))
    return Exporter(out) if out else None
