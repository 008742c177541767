"""The audit exports against real local receivers: delivery in commit order, rotation, a full buffer dropping the
oldest (counted), a destination failing (HTTP 503, or not listening) and recovering with nothing lost, a batch
refused for good (counted), leftovers at shutdown (counted), and no secret header value in logs or stats."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import orjson
import pytest

from portcullis.audit.export import Exporter, JsonlSink, OtlpSink, WebhookSink
from portcullis.config.model import JsonlExport, OtlpExport, WebhookExport
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
