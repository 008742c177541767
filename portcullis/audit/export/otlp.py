"""The OTLP sink: OTLP/HTTP protobuf logs (``ExportLogsServiceRequest``, the official generated classes).

Each record (and each signed checkpoint, when exported) is one ``LogRecord``:

- ``time_unix_nano`` = the record's ``ts_ns``; ``observed_time_unix_nano`` = when the batch was encoded;
- ``body`` = the record's JSON form (:mod:`portcullis.audit.codec`) as a *string*: byte for byte what the JSON-lines
  file holds, so what a SIEM stores can be checked against the chain, and every log backend parses a JSON string
  body into fields (an OTLP kvlist is mapped differently by each, and cannot carry the hex hashes and 64-bit numbers
  any more faithfully);
- ``attributes`` = the searchable fields, ``portcullis.<field>`` (see :data:`ATTRIBUTES`), values as in the JSON;
- ``event_name`` = ``portcullis.audit.record`` or ``portcullis.audit.checkpoint``;
- severity WARN for a denial, a blocked or failed flow and an error answer, INFO otherwise.

Resource ``service.name=portcullis``; scope ``portcullis.audit``. A ``partial_success`` answer counts its
``rejected_log_records`` as dropped (the batch is not sent again: the collector has decided).
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest, ExportLogsServiceResponse
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs, SeverityNumber
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from portcullis.audit.export.base import Item, Sink, encode
from portcullis.audit.export.http import Poster, env_headers
from portcullis.config.model import OtlpExport

ATTRIBUTES = (
    "type",
    "seq",
    "chain",
    "hash",
    "server",
    "session_id",
    "principal",
    "method",
    "kind",
    "direction",
    "decision",
    "rule",
    "outcome",
    "msg_id",
)
WARN_OUTCOMES = frozenset({"denied", "failed", "upstream_failed", "error"})


class OtlpSink(Sink):
    kind = "otlp"

    def __init__(self, name: str, cfg: OtlpExport, where: str = "recording.export") -> None:
        super().__init__(name, cfg.buffer, cfg.batch, cfg.retry_max, cfg.checkpoints)
        headers = {**env_headers(where, cfg.headers_from_env), "Content-Type": "application/x-protobuf"}
        self.poster = Poster(cfg.endpoint, headers, cfg.timeout)

    def deliver(self, items: list[Item]) -> int:
        answer = self.poster.post(otlp_request(items).SerializeToString())
        resp = ExportLogsServiceResponse()
        try:
            resp.ParseFromString(answer)
        except Exception:  # protobuf's DecodeError (untyped): a 2xx body that is not a response is a plain success
            return 0
        return int(resp.partial_success.rejected_log_records)


def _value(v: Any) -> AnyValue:
    if isinstance(v, bool):
        return AnyValue(bool_value=v)
    if isinstance(v, int):
        return AnyValue(int_value=v)
    return AnyValue(string_value=str(v))


def log_record(doc: dict[str, Any], observed: int) -> LogRecord:
    """One exported object (the codec's form) as a LogRecord."""
    attrs = [KeyValue(key=f"portcullis.{k}", value=_value(doc[k])) for k in ATTRIBUTES if doc.get(k) is not None]
    warn = doc.get("decision") == "deny" or doc.get("outcome") in WARN_OUTCOMES
    return LogRecord(
        time_unix_nano=int(doc["ts_ns"]),
        observed_time_unix_nano=observed,
        severity_number=SeverityNumber.SEVERITY_NUMBER_WARN if warn else SeverityNumber.SEVERITY_NUMBER_INFO,
        severity_text="WARN" if warn else "INFO",
        event_name=f"portcullis.audit.{doc['type']}",
        body=AnyValue(string_value=orjson.dumps(doc).decode()),
        attributes=attrs,
    )


def otlp_request(items: list[Item]) -> ExportLogsServiceRequest:
    observed = time.time_ns()
    logs = [log_record(encode(it), observed) for it in items]
    resource = Resource(attributes=[KeyValue(key="service.name", value=AnyValue(string_value="portcullis"))])
    scope = ScopeLogs(scope=InstrumentationScope(name="portcullis.audit"), log_records=logs)
    return ExportLogsServiceRequest(resource_logs=[ResourceLogs(resource=resource, scope_logs=[scope])])
