"""Never leak: distinctive secret values flow through every path of a real gateway — the caller's bearer token, a
forged token, the gateway's own upstream credential, the audit signing key, a secret tool argument, and the
planted secrets and PII of tool results — while it logs at debug level in JSON, exports traces and serves metrics;
none of them appears in any log line, metric or span."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.audit import key_files
from tests.support.gateway import write_config
from tests.support.masking import PLANTED, leaky_server_argv, leaky_server_env
from tests.support.oidc import OidcProvider
from tests.support.procs import running_process, start_process
from tests.support.raw import ACCEPT, final_message, initialize
from tests.support.waiting import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.node]


class Collector:
    """A local OTLP/HTTP receiver that keeps every request body as it arrived."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        rec = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                rec.bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/traces"


async def test_no_secret_reaches_logs_metrics_or_traces(op: OidcProvider, tmp_path: Path) -> None:
    upstream_secret = "upstream-cred-" + secrets.token_hex(12)
    arg_secret = "arg-secret-" + secrets.token_hex(12)
    forged = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJtYWxsb3J5In0." + secrets.token_urlsafe(40)
    key, _pub = key_files(tmp_path)
    pem = key.read_text()
    collector = Collector()
    with running_process(leaky_server_argv(), env=leaky_server_env(), ready_timeout=30) as leaky:
        config, _store = write_config(
            tmp_path,
            {"leaky": {"url": leaky.ready_value, "headers_from_env": {"X-Upstream-Key": "UP_SECRET"}}},
            auth={"mode": "oidc", "issuers": [{"issuer": op.issuer}]},
            recording={"signing_key_env": "AUDIT_KEY"},
            tracing={"endpoint": collector.url},
        )
        env = {**os.environ, "UP_SECRET": upstream_secret, "AUDIT_KEY": pem}
        argv = [sys.executable, "-m", "portcullis", "serve", "--config", str(config)]
        proc = start_process([*argv, "--log-format", "json", "--log-level", "debug"], env=env, tail_size=100_000)
        base = proc.ready_value
        token = await asyncio.to_thread(op.user_token, "alice", f"{base}/mcp/leaky")
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
                url = f"{base}/mcp/leaky"
                h = {"Content-Type": "application/json", "Accept": ACCEPT, "Authorization": f"Bearer {token}"}
                async with http.post(url, json=initialize(), headers=h) as r:
                    await r.read()
                    h |= {"Mcp-Session-Id": r.headers["Mcp-Session-Id"], "MCP-Protocol-Version": "2025-11-25"}
                for i, (tool, args) in enumerate(
                    [("customers", {}), ("mixed", {}), ("echo", {"text": f"my key is {arg_secret}"}), ("fail_tool", {})]
                ):
                    req = {
                        "jsonrpc": "2.0",
                        "id": i + 1,
                        "method": "tools/call",
                        "params": {"name": tool, "arguments": args},
                    }
                    async with http.post(url, json=req, headers=h) as r:
                        json.loads(final_message(await r.read(), r.headers.get("Content-Type", "")))
                bad = {**h, "Authorization": f"Bearer {forged}"}
                async with http.post(url, json=initialize(), headers=bad) as r:
                    assert r.status == 401
                async with http.get(f"{base}/metrics") as r:
                    metrics = await r.text()
        finally:
            proc.stop(timeout=15)  # flushes the spans
        await eventually(lambda: collector.bodies, 10, "spans exported")

    logs = proc.output()
    assert '"level": "DEBUG"' in logs or '"level":"DEBUG"' in logs  # the debug lines were there to look at
    traces = b"".join(collector.bodies).decode("utf-8", "replace")
    planted = [v for v in PLANTED.values() if len(v) >= 12]
    secrets_ = [token, token.split(".")[2], forged, upstream_secret, arg_secret, pem.splitlines()[1], *planted]
    for where, text in (("logs", logs), ("metrics", metrics), ("traces", traces)):
        leaked = [s[:16] for s in secrets_ if s in text]
        assert not leaked, f"{where} leak: {leaked}"
