"""Streaming the audit trail to where audit teams look: JSON-lines files, an OpenTelemetry logs endpoint, a webhook.

The store writer tells the :class:`Exporter` what it committed (records, with the sequence numbers the store gave
them, and signed checkpoints); each sink keeps its own bounded buffer and delivers from its own thread, so a slow or
dead destination never holds up the writer, the event loop, or the other sinks. The store stays the source of truth.

Delivery is **at least once, in commit order**: a batch leaves the buffer only when the destination acknowledged it
(a written file, an HTTP 2xx); failures are retried with exponential backoff (capped by ``retry_max``) for as long as
it takes. A destination may therefore see a batch twice after a failure it did acknowledge: consumers deduplicate by
``(chain, seq)`` or ``hash``. What is not delivered is counted: records dropped from a full buffer (the oldest go
first), batches a destination refused for good (HTTP 4xx other than 408 and 429), and what was still buffered at
shutdown once ``close`` ran out of time. Counters and the last error's *type* (never a URL, header or payload) are in
:meth:`Exporter.stats` (the metrics read them).

Every sink writes the same JSON form of a record and of a checkpoint (:mod:`portcullis.audit.codec`), so a JSON-lines
export verifies on its own (``portcullis audit verify --file``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from portcullis.audit.codec import checkpoint_json, record_json
from portcullis.config.model import ExportSink, JsonlExport, OtlpExport, WebhookExport
from portcullis.flow import Record

log = logging.getLogger("portcullis.audit.export")

Item = tuple[str, Any]  # ("record", Record) or ("checkpoint", Checkpoint)
RETRY_STATUSES = frozenset({408, 429})


class Refused(Exception):
    """The destination refused the batch for good (it is dropped and counted, not retried)."""


class Sink:
    """One destination: a bounded buffer and a thread that delivers it in batches."""

    kind = "sink"

    def __init__(self, name: str, buffer: int, batch: int, retry_max: float, checkpoints: bool) -> None:
        self.name = name
        self.capacity = buffer
        self.batch = batch
        self.retry_max = retry_max
        self.checkpoints = checkpoints
        self._q: deque[Item] = deque()
        self._inflight: list[Item] = []
        self._cond = threading.Condition()
        self._stop = False
        self._deadline = 0.0
        self._thread: threading.Thread | None = None
        self.delivered = 0
        self.dropped = 0
        self.failures = 0
        self.last_error: str | None = None

    # --- the writer's thread: never blocks beyond a lock ---

    def offer(self, items: Sequence[Item]) -> None:
        with self._cond:
            for it in items:
                if it[0] == "checkpoint" and not self.checkpoints:
                    continue
                if len(self._q) >= self.capacity:
                    self._q.popleft()
                    self.dropped += 1
                self._q.append(it)
            self._cond.notify()

    # --- the sink's thread ---

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"portcullis-export-{self.name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        backoff = 0.1
        while True:
            with self._cond:
                while not self._inflight and not self._q and not self._stop:
                    self._cond.wait()
                if not self._inflight:
                    n = min(self.batch, len(self._q))
                    self._inflight = [self._q.popleft() for _ in range(n)]
                if not self._inflight and self._stop:
                    return
            try:
                self.deliver(self._inflight)
            except Refused as exc:
                self.failures += 1
                self.dropped += sum(1 for kind, _ in self._inflight if kind == "record")
                self.last_error = f"refused ({exc})"
                log.warning("audit export %s: a batch was refused for good: %s", self.name, exc)
                self._inflight = []
            except Exception as exc:
                self.failures += 1
                self.last_error = type(exc).__name__
                if self.failures == 1 or self.failures % 100 == 0:
                    log.warning("audit export %s: delivery failed (%s); retrying", self.name, type(exc).__name__)
                with self._cond:
                    if self._stop and time.monotonic() >= self._deadline:
                        return
                    self._cond.wait(timeout=backoff)
                backoff = min(backoff * 2, self.retry_max)
                continue
            else:
                self.delivered += sum(1 for kind, _ in self._inflight if kind == "record")
                self._inflight = []
                backoff = 0.1

    def deliver(self, items: list[Item]) -> None:
        raise NotImplementedError

    def close(self, deadline: float) -> None:
        """Stop taking more; deliver what is buffered until ``deadline`` (monotonic), then count the rest."""
        with self._cond:
            self._stop = True
            self._deadline = deadline
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(max(0.0, deadline - time.monotonic()))
        with self._cond:
            left = sum(1 for kind, _ in (*self._inflight, *self._q) if kind == "record")
            if left:
                self.dropped += left
                log.warning("audit export %s: %d records not delivered at shutdown", self.name, left)
            self._q.clear()
            self._inflight = []

    def stats(self) -> dict[str, Any]:
        with self._cond:
            pending = len(self._q) + len(self._inflight)
        return {
            "sink": self.name,
            "type": self.kind,
            "delivered": self.delivered,
            "dropped": self.dropped,
            "failures": self.failures,
            "pending": pending,
            "last_error": self.last_error,
        }


def encode(item: Item) -> dict[str, Any]:
    kind, obj = item
    return record_json(obj) if kind == "record" else checkpoint_json(obj)


class JsonlSink(Sink):
    """Appends one JSON object per line; rotates to PATH.1 … PATH.keep when the file would pass max_bytes."""

    kind = "jsonl"

    def __init__(self, name: str, cfg: JsonlExport) -> None:
        super().__init__(name, cfg.buffer, 1024, 5.0, cfg.checkpoints)
        self.path = Path(cfg.path)
        self.max_bytes = cfg.max_bytes
        self.keep = cfg.keep
        self.fsync = cfg.fsync

    def deliver(self, items: list[Item]) -> None:
        """Whole lines only; a file is rotated before the line that would take it past ``max_bytes``. What was
        written leaves ``items`` at once, so a failure half-way (a full disk) retries only the rest: the files hold
        each record once, in order, and stay verifiable (a torn line is cut off again)."""
        size = self.path.stat().st_size if self.path.exists() else 0
        chunk: list[bytes] = []
        taken = 0
        for it in list(items):
            line = orjson.dumps(encode(it)) + b"\n"
            pending = sum(map(len, chunk))
            if size + pending + len(line) > self.max_bytes and size + pending > 0:
                self._append(chunk, items, taken)
                self._rotate()
                size, chunk, taken = 0, [], 0
            chunk.append(line)
            taken += 1
        self._append(chunk, items, taken)

    def _append(self, lines: list[bytes], items: list[Item], n: int) -> None:
        if not lines:
            return
        with open(self.path, "ab") as f:
            start = f.tell()
            try:
                f.write(b"".join(lines))
                f.flush()
                if self.fsync:
                    os.fsync(f.fileno())
            except OSError:
                with contextlib.suppress(OSError):
                    f.truncate(start)
                raise
        self.delivered += sum(1 for kind, _ in items[:n] if kind == "record")
        del items[:n]

    def _rotate(self) -> None:
        if not self.path.exists():
            return
        oldest = self.path.with_name(f"{self.path.name}.{self.keep}")
        with contextlib.suppress(FileNotFoundError):
            oldest.unlink()
        for i in range(self.keep - 1, 0, -1):
            src = self.path.with_name(f"{self.path.name}.{i}")
            if src.exists():
                src.rename(self.path.with_name(f"{self.path.name}.{i + 1}"))
        self.path.rename(self.path.with_name(f"{self.path.name}.1"))


def _headers(from_env: dict[str, str]) -> dict[str, str]:
    return {h: os.environ.get(env, "") for h, env in from_env.items()}


def _post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> bytes:
    """POST; returns the response body on 2xx, raises Refused on a final 4xx, another exception to retry."""
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(req, timeout=timeout) as resp:
            data: bytes = resp.read()
            return data
    except urllib.error.HTTPError as exc:
        if 400 <= exc.code < 500 and exc.code not in RETRY_STATUSES:
            raise Refused(f"HTTP {exc.code}") from None
        raise ConnectionError(f"HTTP {exc.code}") from None


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect would carry the trail and the credential elsewhere: it is an error, not followed."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class WebhookSink(Sink):
    """POSTs ``{"records": [...], "checkpoints": [...]}`` (JSON) per batch."""

    kind = "webhook"

    def __init__(self, name: str, cfg: WebhookExport) -> None:
        super().__init__(name, cfg.buffer, cfg.batch, cfg.retry_max, cfg.checkpoints)
        url = os.environ.get(cfg.url[4:], "") if cfg.url.startswith("env:") else cfg.url
        if not url:
            raise ValueError(f"recording.export webhook: environment variable {cfg.url[4:]} is not set")
        self.url = url
        self.headers = {**_headers(cfg.headers_from_env), "Content-Type": "application/json"}
        self.timeout = cfg.timeout

    def deliver(self, items: list[Item]) -> None:
        body = {
            "records": [encode(it) for it in items if it[0] == "record"],
            "checkpoints": [encode(it) for it in items if it[0] == "checkpoint"],
        }
        _post(self.url, orjson.dumps(body), self.headers, self.timeout)


class OtlpSink(Sink):
    """OTLP/HTTP (protobuf) logs: one LogRecord per audit record (checkpoints too, as their own event name)."""

    kind = "otlp"

    def __init__(self, name: str, cfg: OtlpExport) -> None:
        super().__init__(name, cfg.buffer, cfg.batch, cfg.retry_max, cfg.checkpoints)
        self.url = cfg.endpoint
        self.headers = {**_headers(cfg.headers_from_env), "Content-Type": "application/x-protobuf"}
        self.timeout = cfg.timeout

    def deliver(self, items: list[Item]) -> None:
        from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
            ExportLogsServiceRequest,
            ExportLogsServiceResponse,
        )

        body = otlp_request(items, ExportLogsServiceRequest).SerializeToString()
        answer = _post(self.url, body, self.headers, self.timeout)
        if answer:
            resp = ExportLogsServiceResponse()
            with contextlib.suppress(Exception):
                resp.ParseFromString(answer)
                rejected = int(resp.partial_success.rejected_log_records)
                if rejected:
                    self.dropped += rejected
                    self.last_error = f"partial success: {rejected} rejected"


def _any(v: Any) -> Any:
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue

    if v is None:
        return AnyValue()
    if isinstance(v, bool):
        return AnyValue(bool_value=v)
    if isinstance(v, int):
        return AnyValue(int_value=v)
    return AnyValue(string_value=str(v))


ATTRIBUTES = ("server", "session_id", "principal", "method", "kind", "direction", "decision", "rule", "outcome")


def otlp_request(items: list[Item], request_type: Any) -> Any:
    """An ExportLogsServiceRequest: the body of each log is the record's JSON form as a string (what a SIEM indexes
    and what ``audit verify`` could re-check), the searchable fields are attributes too."""
    from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope, KeyValue
    from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs, SeverityNumber
    from opentelemetry.proto.resource.v1.resource_pb2 import Resource

    logs = []
    now = time.time_ns()
    for it in items:
        doc = encode(it)
        attrs = [KeyValue(key="portcullis.type", value=_any(doc["type"]))]
        for k in ("seq", "chain", "hash", *ATTRIBUTES):
            if doc.get(k) is not None:
                attrs.append(KeyValue(key=f"portcullis.{k}", value=_any(doc[k])))
        denied = doc.get("decision") == "deny" or doc.get("outcome") in ("denied", "failed", "upstream_failed")
        logs.append(
            LogRecord(
                time_unix_nano=int(doc["ts_ns"]),
                observed_time_unix_nano=now,
                severity_number=SeverityNumber.SEVERITY_NUMBER_WARN if denied else SeverityNumber.SEVERITY_NUMBER_INFO,
                severity_text="WARN" if denied else "INFO",
                event_name=f"portcullis.audit.{doc['type']}",
                body=_any(orjson.dumps(doc).decode()),
                attributes=attrs,
            )
        )
    resource = Resource(attributes=[KeyValue(key="service.name", value=_any("portcullis"))])
    scope = InstrumentationScope(name="portcullis.audit")
    return request_type(
        resource_logs=[ResourceLogs(resource=resource, scope_logs=[ScopeLogs(scope=scope, log_records=logs)])]
    )


class Exporter:
    """The store writer's commit listener that fans committed records out to the sinks."""

    needs_seq = True

    def __init__(self, sinks: Sequence[Sink]) -> None:
        self.sinks = tuple(sinks)

    def committed(self, records: Sequence[Record]) -> None:
        items: list[Item] = [("record", r) for r in records]
        for s in self.sinks:
            s.offer(items)

    def checkpointed(self, checkpoint: Any) -> None:
        for s in self.sinks:
            s.offer([("checkpoint", checkpoint)])

    def start(self) -> None:
        for s in self.sinks:
            s.start()

    def close(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        for s in self.sinks:
            s.close(deadline)

    def stats(self) -> list[dict[str, Any]]:
        return [s.stats() for s in self.sinks]


def build_exporter(sinks: Sequence[ExportSink]) -> Exporter | None:
    out: list[Sink] = []
    for i, cfg in enumerate(sinks):
        name = f"{cfg.type}-{i}"
        if isinstance(cfg, JsonlExport):
            out.append(JsonlSink(name, cfg))
        elif isinstance(cfg, OtlpExport):
            out.append(OtlpSink(name, cfg))
        else:
            out.append(WebhookSink(name, cfg))
    return Exporter(out) if out else None
