"""Local HTTP receivers for the audit exports: an OTLP/HTTP logs endpoint (decoded with the official protobuf
classes) and a JSON webhook, each able to fail on request (HTTP status, or not listening at all) and recover."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson


@dataclass
class Receiver:
    kind: str  # "otlp" or "webhook"
    port: int
    got: list[dict[str, Any]] = field(default_factory=list)  # decoded exported objects, in arrival order
    headers: list[dict[str, str]] = field(default_factory=list)
    fail_with: int | None = None  # answer every request with this status (and keep nothing)
    server: ThreadingHTTPServer | None = None
    thread: threading.Thread | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/logs" if self.kind == "otlp" else f"http://127.0.0.1:{self.port}/hook"

    def records(self) -> list[dict[str, Any]]:
        with self.lock:
            return [g for g in self.got if g.get("type") == "record"]

    def start(self) -> None:
        """Listen (again, on the same port)."""
        rec = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if rec.fail_with is not None:
                    self.send_response(rec.fail_with)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                with rec.lock:
                    rec.headers.append(dict(self.headers))
                    rec.got.extend(decode(rec.kind, body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.allow_reuse_address = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        """Stop listening: connections are refused until :meth:`start`."""
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


def decode(kind: str, body: bytes) -> list[dict[str, Any]]:
    if kind == "webhook":
        doc = orjson.loads(body)
        return [*doc["records"], *doc["checkpoints"]]
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

    req = ExportLogsServiceRequest()
    req.ParseFromString(body)
    out = []
    for rl in req.resource_logs:
        service = {kv.key: kv.value.string_value for kv in rl.resource.attributes}
        for sl in rl.scope_logs:
            for lr in sl.log_records:
                doc = orjson.loads(lr.body.string_value)
                attrs = {kv.key: kv.value for kv in lr.attributes}
                assert service.get("service.name") == "portcullis" and sl.scope.name == "portcullis.audit"
                assert lr.time_unix_nano == doc["ts_ns"] and attrs["portcullis.type"].string_value == doc["type"]
                out.append(doc)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def receiver(kind: str) -> Iterator[Receiver]:
    r = Receiver(kind, free_port())
    r.start()
    try:
        yield r
    finally:
        r.stop()
