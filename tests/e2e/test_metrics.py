"""Prometheus metrics of a real gateway, scraped and parsed with the Prometheus client's own parser: requests by
server/method/outcome, latency, decisions, masking, gateway events, store health; labels stay bounded and hold no
caller data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.conformance import fixture_server_argv
from tests.support.gateway import running_gateway
from tests.support.procs import running_process
from tests.support.raw import ACCEPT, final_message, initialize

pytestmark = pytest.mark.e2e

POLICY = """\
version: 1
default: allow
rules:
  - id: no-errors
    deny: {tools: [test_error_handling]}
"""


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(got: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return got.get((name, tuple(sorted(labels.items()))), 0.0)


async def post(http: aiohttp.ClientSession, url: str, body: dict[str, Any], headers: dict[str, str]) -> Any:
    async with http.post(url, json=body, headers=headers) as r:
        raw = final_message(await r.read(), r.headers.get("Content-Type", ""))
        return r.headers, json.loads(raw) if raw else None


async def test_metrics_count_what_the_trail_records(tmp_path: Path) -> None:
    (tmp_path / "policy.yaml").write_text(POLICY)
    with (
        running_process(fixture_server_argv(port=0), ready_timeout=30) as fixture,
        running_gateway(
            tmp_path, {"fx": {"url": fixture.ready_value}}, policy={"file": str(tmp_path / "policy.yaml")}
        ) as gw,
    ):
        url = gw.url("fx")
        h = {"Content-Type": "application/json", "Accept": ACCEPT}
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
            init = initialize(client="m")
            headers, _ = await post(http, url, init, h)
            h |= {"Mcp-Session-Id": headers["Mcp-Session-Id"], "MCP-Protocol-Version": "2025-11-25"}
            async with http.post(url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=h) as r:
                assert r.status == 202
            texts = ["one", "mail alice.secret@example.com now", "three"]
            for i, text in enumerate(texts, 1):
                call = {
                    "jsonrpc": "2.0",
                    "id": i,
                    "method": "tools/call",
                    "params": {"name": "echo", "arguments": {"text": text}},
                }
                _, body = await post(http, url, call, h)
                assert "result" in body, body
            denied = {"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {"name": "test_error_handling"}}
            _, body = await post(http, url, denied, h)
            assert "error" in body
            async with http.post(f"{gw.base}/mcp/probe-alice-secret", json=init, headers=h) as r:
                assert r.status == 404
            async with http.get(f"{gw.base}/metrics") as r:
                assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain")
                text = await r.text()

    got = samples(text)
    assert value(got, "portcullis_requests_total", server="fx", method="tools/call", outcome="ok") == 3
    assert value(got, "portcullis_requests_total", server="fx", method="tools/call", outcome="denied") == 1
    assert value(got, "portcullis_requests_total", server="fx", method="initialize", outcome="ok") == 1
    assert value(got, "portcullis_request_duration_seconds_count", server="fx", method="tools/call") == 4
    assert value(got, "portcullis_policy_decisions_total", server="fx", decision="deny") == 1
    assert value(got, "portcullis_masked_values_total", server="fx", **{"class": "email"}) >= 1
    assert value(got, "portcullis_gateway_events_total", kind="session_open") == 1
    assert value(got, "portcullis_store_healthy") == 1
    assert value(got, "portcullis_store_records_total") >= 10
    assert value(got, "portcullis_sessions_active") == 1
    label_values = {v for (_name, labels) in got for _k, v in labels}
    assert not any("alice" in v or "probe" in v or "secret" in v for v in label_values), label_values
