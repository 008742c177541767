"""The audit exports against real local receivers: delivery in commit order, rotation, a full buffer dropping the
oldest (counted), a destination failing (HTTP 503, or not listening) and recovering with nothing lost, a batch
refused for good (counted), leftovers at shutdown (counted), and no secret header value in logs or stats."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest

from portcullis.audit.codec import record_json
from portcullis.audit.export import Exporter, JsonlSink, OtlpSink, WebhookSink, build_exporter, otlp_request
from portcullis.config.model import JsonlExport, OtlpExport, WebhookExport
from portcullis.errors import ConfigError
from portcullis.pipeline.record import event_record
from tests.support.receivers import receiver
from tests.support.waiting import wait_until


def recs(n: int, start: int = 0) -> list[Any]:
    out = []
    for i in range(start, start + n):
        r = event_record("srv", "s1", "test", f"record {i}", payload=b'{"i": %d}' % i)
        r.seq, r.chain, r.hash, r.prev_hash = i + 1, "gateway", bytes(32), bytes(32)
        out.append(r)
    return out


def details(got: list[dict[str, Any]]) -> list[str]:
    return [g["detail"] for g in got if g.get("type") == "record"]


@pytest.mark.parametrize("kind", ["otlp", "webhook"])
def test_http_sinks_deliver_in_order_through_failure_and_recovery(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXPORT_TOKEN", "s3cr3t-header-value")
    with receiver(kind) as rx:
        common = {"buffer": 1000, "batch": 7, "retry_max": 0.2, "headers_from_env": {"X-Token": "EXPORT_TOKEN"}}
        if kind == "otlp":
            sink: Any = OtlpSink("otlp-0", OtlpExport(type="otlp", endpoint=rx.url, **common))
        else:
            sink = WebhookSink("webhook-0", WebhookExport(type="webhook", url=rx.url, **common))
        ex = Exporter([sink])
        ex.start()
        try:
            ex.committed(recs(20))
            wait_until(lambda: len(rx.records()) == 20, 10, "the first 20")
            rx.fail_with = 503  # the destination fails ...
            ex.committed(recs(10, 20))
            wait_until(lambda: sink.failures >= 2, 10, "retries")
            rx.fail_with = None  # ... and recovers: nothing lost, order kept
            wait_until(lambda: len(rx.records()) == 30, 10, "the rest after recovery")
            rx.stop()  # not listening at all
            ex.committed(recs(5, 30))
            wait_until(lambda: sink.failures >= 4, 10, "connection refused, retried")
            rx.start()
            wait_until(lambda: len(rx.records()) == 35, 10, "delivery after the receiver came back")
        finally:
            ex.close(5.0)
    assert details(rx.got) == [f"record {i}" for i in range(35)]
    assert rx.headers[0]["X-Token"] == "s3cr3t-header-value"
    st = ex.stats()[0]
    assert st["delivered"] == 35 and st["dropped"] == 0 and st["pending"] == 0
    assert "s3cr3t" not in orjson.dumps(ex.stats()).decode() and rx.url not in str(st["last_error"])


def test_a_refused_batch_is_dropped_and_counted_and_leftovers_at_shutdown_too(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with receiver("webhook") as rx:
        sink = WebhookSink("webhook-0", WebhookExport(type="webhook", url=rx.url, batch=5, retry_max=0.2))
        ex = Exporter([sink])
        ex.start()
        rx.fail_with = 400  # a poison batch: retrying cannot help
        ex.committed(recs(5))
        wait_until(lambda: sink.dropped == 5, 10, "the refused batch counted")
        rx.fail_with = 503
        ex.committed(recs(3, 5))
        wait_until(lambda: sink.failures >= 2, 10, "retrying")
        ex.close(0.3)  # the destination never comes back before shutdown
    st = ex.stats()[0]
    assert st["dropped"] == 8 and st["delivered"] == 0 and st["pending"] == 0
    assert "3 records not delivered at shutdown" in caplog.text and rx.url not in caplog.text


def test_a_full_buffer_drops_the_oldest_and_counts_them() -> None:
    with receiver("webhook") as rx:
        rx.fail_with = 503
        sink = WebhookSink("webhook-0", WebhookExport(type="webhook", url=rx.url, buffer=10, batch=5, retry_max=0.1))
        ex = Exporter([sink])
        ex.start()
        ex.committed(recs(5))  # taken into the in-flight batch, retried
        wait_until(lambda: sink.failures >= 1, 10, "a failed attempt")
        ex.committed(recs(15, 5))  # 15 more into a buffer of 10: the 5 oldest of them go
        assert sink.dropped == 5
        rx.fail_with = None
        wait_until(lambda: len(rx.records()) == 15, 10, "what was kept")
        ex.close(5.0)
    assert details(rx.got) == [f"record {i}" for i in [0, 1, 2, 3, 4, *range(10, 20)]]


def test_jsonl_rotates_and_keeps_order(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    sink = JsonlSink("jsonl-0", JsonlExport(type="jsonl", path=str(path), max_bytes=4000, keep=3))
    ex = Exporter([sink])
    ex.start()
    for i in range(0, 60, 6):
        ex.committed(recs(6, i))
    wait_until(lambda: sink.delivered == 60, 10, "all written")
    ex.close(5.0)
    files = [tmp_path / f"audit.jsonl.{i}" for i in (3, 2, 1)] + [path]
    assert all(f.exists() for f in files) and not (tmp_path / "audit.jsonl.4").exists()
    lines = [orjson.loads(x) for f in files for x in f.read_bytes().splitlines()]
    numbers = [int(x["detail"].split()[1]) for x in lines]
    assert numbers == sorted(numbers) and numbers[-1] == 59 and all(f.stat().st_size <= 4000 for f in files)


def test_jsonl_retries_a_failed_write_and_writes_each_line_once(tmp_path: Path) -> None:
    path = tmp_path / "not-yet" / "audit.jsonl"  # the directory is missing: every write fails until it exists
    sink = JsonlSink("jsonl-0", JsonlExport(type="jsonl", path=str(path)))
    ex = Exporter([sink])
    ex.start()
    ex.committed(recs(4))
    wait_until(lambda: sink.failures >= 2, 10, "failed writes, retried")
    assert sink.stats()["last_error"] == "FileNotFoundError" and sink.stats()["pending"] == 4
    ex.committed(recs(3, 4))
    path.parent.mkdir()
    wait_until(lambda: sink.delivered == 7, 10, "all written once the directory exists")
    ex.close(5.0)
    assert [orjson.loads(x)["detail"] for x in path.read_bytes().splitlines()] == [f"record {i}" for i in range(7)]


def test_jsonl_cuts_a_torn_last_line_before_appending(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    whole = orjson.dumps(record_json(recs(1)[0])) + b"\n"
    path.write_bytes(whole + b'{"type": "record", "v": 1, "seq": 2, "payl')  # a process killed mid-write
    sink = JsonlSink("jsonl-0", JsonlExport(type="jsonl", path=str(path)))
    ex = Exporter([sink])
    ex.start()
    ex.committed(recs(2, 1))
    wait_until(lambda: sink.delivered == 2, 10, "written")
    ex.close(5.0)
    assert [orjson.loads(x)["seq"] for x in path.read_bytes().splitlines()] == [1, 2, 3]


def test_an_otlp_log_record_carries_the_json_form_and_searchable_attributes() -> None:
    allowed, denied = recs(2)
    denied.decision, denied.rule, denied.outcome, denied.principal = "deny", "no-shell", "denied", "alice"
    req = otlp_request([("record", allowed), ("record", denied)])
    (rl,) = req.resource_logs
    (sl,) = rl.scope_logs
    assert [(kv.key, kv.value.string_value) for kv in rl.resource.attributes] == [("service.name", "portcullis")]
    assert sl.scope.name == "portcullis.audit"
    first, second = sl.log_records
    assert orjson.loads(second.body.string_value) == record_json(denied)
    assert second.time_unix_nano == denied.ts_ns and second.observed_time_unix_nano >= denied.ts_ns
    assert (first.severity_text, second.severity_text) == ("INFO", "WARN")
    assert second.event_name == "portcullis.audit.record"
    attrs = {kv.key: kv.value for kv in second.attributes}
    assert attrs["portcullis.seq"].int_value == 2 and attrs["portcullis.chain"].string_value == "gateway"
    assert attrs["portcullis.hash"].string_value == "00" * 32 and attrs["portcullis.rule"].string_value == "no-shell"
    assert attrs["portcullis.principal"].string_value == "alice" and attrs["portcullis.server"].string_value == "srv"
    assert "portcullis.method" not in attrs  # absent fields are left out, not sent empty


@contextlib.contextmanager
def partial_success_collector(rejected: int) -> Iterator[tuple[str, list[int]]]:
    """An OTLP collector that takes every request but rejects ``rejected`` log records of each."""
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
        ExportLogsPartialSuccess,
        ExportLogsServiceRequest,
        ExportLogsServiceResponse,
    )

    sizes: list[int] = []
    answer = ExportLogsServiceResponse(
        partial_success=ExportLogsPartialSuccess(rejected_log_records=rejected, error_message="s3cr3t detail")
    ).SerializeToString()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            req = ExportLogsServiceRequest()
            req.ParseFromString(self.rfile.read(int(self.headers["Content-Length"])))
            sizes.append(len(req.resource_logs[0].scope_logs[0].log_records))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1/logs", sizes
    finally:
        server.shutdown()
        server.server_close()


def test_an_otlp_partial_success_counts_the_rejected_records_as_dropped(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with partial_success_collector(rejected=2) as (url, sizes):
        sink = OtlpSink("otlp-0", OtlpExport(type="otlp", endpoint=url, batch=5))
        ex = Exporter([sink])
        ex.start()
        ex.committed(recs(5))
        wait_until(lambda: sink.stats()["pending"] == 0 and sizes, 10, "the batch answered")
        ex.close(5.0)
    st = sink.stats()
    assert sizes == [5]  # not sent again: the collector has decided
    assert (st["delivered"], st["dropped"], st["last_error"]) == (3, 2, "partial success: 2 rejected")
    assert "rejected 2 records" in caplog.text and "s3cr3t" not in caplog.text


def test_no_url_or_header_value_reaches_the_logs_or_the_stats(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.DEBUG)
    with receiver("webhook") as rx:
        monkeypatch.setenv("HOOK_URL", rx.url + "?token=s3cr3t-in-url")
        monkeypatch.setenv("HOOK_AUTH", "Bearer s3cr3t-in-header")
        cfg = WebhookExport(
            type="webhook", url="env:HOOK_URL", headers_from_env={"Authorization": "HOOK_AUTH"}, retry_max=0.1
        )
        ex = build_exporter([cfg])
        assert ex is not None
        (sink,) = ex.sinks
        ex.start()
        rx.fail_with = 503
        ex.committed(recs(2))
        wait_until(lambda: sink.failures >= 2, 10, "retrying")
        rx.fail_with = 401
        wait_until(lambda: sink.dropped == 2, 10, "refused for good")
        rx.stop()
        ex.committed(recs(1, 2))
        wait_until(lambda: sink.failures >= 4, 10, "connection refused")
        ex.close(0.2)
        st = ex.stats()[0]
    assert st["last_error"] in ("URLError", "ConnectionRefusedError") and st["dropped"] == 3
    shown = caplog.text + orjson.dumps(ex.stats()).decode()
    assert "HTTP 503" in caplog.text and "HTTP 401" in caplog.text  # what went wrong is said ...
    assert "s3cr3t" not in shown and f"127.0.0.1:{rx.port}" not in shown  # ... but never where to, or with what


def test_an_unset_environment_variable_is_a_configuration_error_that_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    with pytest.raises(ConfigError, match=r"recording.export\[0\].headers_from_env.X-Key: \$NOT_SET_ANYWHERE"):
        build_exporter(
            [
                OtlpExport(
                    type="otlp", endpoint="http://127.0.0.1:9/v1/logs", headers_from_env={"X-Key": "NOT_SET_ANYWHERE"}
                )
            ]
        )
    with pytest.raises(ConfigError, match=r"recording.export\[0\].url: \$NOT_SET_ANYWHERE is not set"):
        build_exporter([WebhookExport(type="webhook", url="env:NOT_SET_ANYWHERE")])
    assert build_exporter([]) is None
