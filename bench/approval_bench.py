"""Approval latency: from an approver's decision to the held call reaching the upstream.

    .venv/bin/python bench/approval_bench.py [--rounds 30] [--name NAME]

One gateway (``portcullis serve``, SQLite, its development token issuer, ``approvals.wait`` so the caller waits),
a policy that holds every ``tools/call`` of group ``oncall`` for approval by ``eng``, and an upstream inside this
process that notes ``time.monotonic()`` when a call arrives. Per round: alice's call is sent and waits; once the
request is listed pending, bob's approve POST is sent at t0; the upstream sees the call at t1 (same machine, same
monotonic clock). Reports the median, p95 and max of t1 - t0 (target ≤ 50 ms), and the approve POST's own latency.
Writes bench/results/approval-<name>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PORTCULLIS = ROOT / ".venv" / "bin" / "portcullis"
TARGET_MS = 50.0
POLICY = """\
version: 1
default: deny
rules:
  - id: oncall-calls-need-approval
    hold: {groups: [oncall], methods: [tools/call], approvers: [eng]}
"""


class Upstream:
    """A minimal session-era MCP server that notes when each tools/call arrives."""

    def __init__(self) -> None:
        self.arrivals: dict[str, float] = {}

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.method != "POST":
            return web.Response(status=405)
        msg = await request.json()
        method = msg.get("method")
        if method == "tools/call":
            self.arrivals[str(msg["params"]["arguments"]["round"])] = time.monotonic()
            return web.json_response(
                {"jsonrpc": "2.0", "id": msg["id"], "result": {"content": [{"type": "text", "text": "done"}]}}
            )
        if method == "initialize":
            result = {
                "protocolVersion": "2025-11-25",
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "approval-bench", "version": "1"},
            }
            return web.json_response(
                {"jsonrpc": "2.0", "id": msg["id"], "result": result}, headers={"Mcp-Session-Id": "bench"}
            )
        if "id" not in msg:
            return web.Response(status=202)
        return web.json_response({"jsonrpc": "2.0", "id": msg["id"], "result": {}})


def _spawn(cfg: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(PORTCULLIS), "serve", "--config", str(cfg)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )


def token(cfg: Path, base: str, user: str, groups: str) -> str:
    out = subprocess.run(
        [str(PORTCULLIS), "token", "--config", str(cfg), "--user", user, "--groups", groups, "--url", base],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return out.stdout.strip()


async def run(rounds: int, tmp: Path) -> dict[str, Any]:
    up = Upstream()
    app = web.Application()
    app.router.add_route("*", "/mcp", up.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    (tmp / "policy.yaml").write_text(POLICY)
    cfg = tmp / "gw.yaml"
    cfg.write_text(
        json.dumps(
            {
                "listen": "127.0.0.1:0",
                "store": f"sqlite:///{tmp / 'gw.db'}",
                "auth": {"mode": "oidc", "dev_issuer": {"enabled": True, "key_file": str(tmp / "dev.jwk")}},
                "policy": {"file": str(tmp / "policy.yaml")},
                "approvals": {"wait": 30},
                "servers": {"up": {"url": f"http://127.0.0.1:{port}/mcp"}},
            }
        )
    )
    gw = _spawn(cfg)
    try:
        assert gw.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(gw.stdout.readline), timeout=30)
        m = re.search(r"READY (http://\S+)", line)
        if m is None:
            raise RuntimeError(f"gateway did not start: {line!r}")
        base = m.group(1).rstrip("/")
        alice = await asyncio.to_thread(token, cfg, base, "alice", "oncall")
        bob = await asyncio.to_thread(token, cfg, base, "bob", "eng")
        return await measure(base, alice, bob, up, rounds)
    finally:
        gw.terminate()
        try:
            gw.wait(timeout=10)
        except subprocess.TimeoutExpired:
            gw.kill()
        await runner.cleanup()


async def measure(base: str, alice: str, bob: str, up: Upstream, rounds: int) -> dict[str, Any]:
    accept = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
    lat: list[float] = []
    post_ms: list[float] = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
        h = {**accept, "Authorization": f"Bearer {alice}"}
        init = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}}
        async with http.post(
            f"{base}/mcp/up", json={"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": init}, headers=h
        ) as r:
            sid = r.headers["Mcp-Session-Id"]
            await r.read()
        h |= {"Mcp-Session-Id": sid, "MCP-Protocol-Version": "2025-11-25"}
        admin = {"Authorization": f"Bearer {bob}"}
        for i in range(rounds):
            body = {
                "jsonrpc": "2.0",
                "id": i + 1,
                "method": "tools/call",
                "params": {"name": "x", "arguments": {"round": i}},
            }

            async def call(body: dict[str, Any] = body) -> bytes:
                async with http.post(f"{base}/mcp/up", json=body, headers=h) as r:
                    return await r.read()

            task = asyncio.ensure_future(call())
            req = None
            deadline = time.monotonic() + 10
            while req is None and time.monotonic() < deadline:
                async with http.get(f"{base}/admin/approvals?state=pending", headers=admin) as r:
                    pending = (await r.json())["approvals"]
                req = pending[0]["id"] if pending else None
                if req is None:
                    await asyncio.sleep(0.005)
            if req is None:
                raise RuntimeError("the held call never showed up as pending")
            t0 = time.monotonic()
            async with http.post(f"{base}/admin/approvals/{req}/approve", json={"reason": "bench"}, headers=admin) as r:
                await r.read()
                post_ms.append((time.monotonic() - t0) * 1000)
            reply = await asyncio.wait_for(task, timeout=30)
            if b'"done"' not in reply:
                raise RuntimeError(f"the approved call did not go through: {reply[:200]!r}")
            lat.append((up.arrivals[str(i)] - t0) * 1000)
    lat.sort()
    return {
        "rounds": rounds,
        "decision_to_upstream_ms": {
            "median": statistics.median(lat),
            "p95": lat[max(0, int(len(lat) * 0.95) - 1)],
            "max": lat[-1],
            "min": lat[0],
        },
        "approve_post_ms_median": statistics.median(post_ms),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--name", default=dt.datetime.now().strftime("%Y%m%d-%H%M%S"))
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        out = asyncio.run(run(args.rounds, Path(tmp)))
    d = out["decision_to_upstream_ms"]
    ok = "OK" if d["median"] <= TARGET_MS else "FAIL"
    print(
        f"decision -> upstream: median {d['median']:.1f} ms, p95 {d['p95']:.1f} ms, max {d['max']:.1f} ms "
        f"(target median <= {TARGET_MS:.0f} ms: {ok}); approve POST median {out['approve_post_ms_median']:.1f} ms"
    )
    path = BENCH / "results" / f"approval-{args.name}.json"
    path.write_text(json.dumps({"when": dt.datetime.now().isoformat(), "pid": os.getpid(), **out}, indent=2))
    print(f"results: {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
