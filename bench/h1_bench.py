"""CPU per upstream request: aiohttp's ClientSession (as the gateway uses it) against portcullis.upstream.h1.

    .venv/bin/python bench/h1_bench.py [--requests 3000] [--repeats 7] [--concurrency 1,8]
                                       [--payloads small,10k,sse] [--no-parsers] [--out FILE.json]

One fast local aiohttp server (low-level ``web.Server`` on uvloop, pre-serialised replies) runs in a child process
pinned to CPU 0; this process (uvloop) is pinned to CPU 1 and is the only thing measured. Each cell is one client,
payload and concurrency: ``--warmup`` requests, then ``--requests`` measured ones; the CPU is utime + stime of this
process over the measured window (``time.process_time``), divided by the requests. The two clients alternate within
every repeat (the order flips each repeat), so machine noise hits both alike; medians over ``--repeats`` are
reported with the ratio h1 / aiohttp, computed per repeat and then the median taken.

What each request does, for both clients, is what ``HttpUpstream.send`` + ``HttpReply`` do: a POST with the
forwarded MCP headers and a ~150-byte JSON-RPC body, then the whole body read under a limit (``small``: ~120 B
JSON; ``10k``: ~10 KB JSON), or a one-event ``text/event-stream`` reply (chunked) read chunk by chunk (``sse``).
aiohttp is configured as in ``portcullis.server.gateway`` (TCPConnector(limit=0, limit_per_host=0,
keepalive_timeout=60, enable_cleanup_closed=True), auto_decompress=False, no User-Agent, DummyCookieJar,
ClientTimeout(total=None, connect=10, sock_read=300)).

The parser section (skip with ``--no-parsers``) times httptools' ``HttpResponseParser`` against aiohttp's C
``HttpResponseParser`` on the same response bytes, in process.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
import orjson  # noqa: E402
import uvloop  # noqa: E402
import yarl  # noqa: E402

from portcullis.upstream import h1  # noqa: E402

REQUEST_BODY = orjson.dumps(
    {"jsonrpc": "2.0", "id": 12345, "method": "tools/call", "params": {"name": "echo", "arguments": {"text": "hi"}}}
)
HEADERS = {
    "Accept": "application/json, text/event-stream",
    "Content-Type": "application/json",
    "MCP-Protocol-Version": "2025-11-25",
    "Mcp-Session-Id": "5f0c1e2d3a4b5c6d7e8f9a0b1c2d3e4f",
}
LIMIT = 4 * 1024 * 1024 * 16  # the gateway's max_json: limits.max_body_bytes (default 4 MiB) x 16


def _reply(text_len: int) -> bytes:
    text = ("0123456789abcdef" * (text_len // 16 + 1))[:text_len]
    return orjson.dumps(
        {"jsonrpc": "2.0", "id": 12345, "result": {"content": [{"type": "text", "text": text}], "isError": False}}
    )


SMALL = _reply(40)
BIG = _reply(10_000)
SSE = b"event: message\ndata: " + SMALL + b"\n\n"


# ---------------------------------------------------------------- the server (child process)


def serve() -> None:
    from aiohttp import web

    async def handler(req: web.BaseRequest) -> web.StreamResponse:
        await req.read()
        if req.path == "/small":
            return web.Response(body=SMALL, content_type="application/json")
        if req.path == "/10k":
            return web.Response(body=BIG, content_type="application/json")
        if req.path == "/sse":
            r = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
            await r.prepare(req)
            await r.write(SSE)
            await r.write_eof()
            return r
        return web.Response(status=404)

    async def main() -> None:
        server = web.Server(handler, access_log=None)
        runner = web.ServerRunner(server)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        print(f"READY http://127.0.0.1:{port}", flush=True)
        await asyncio.Event().wait()

    uvloop.run(main())


# ---------------------------------------------------------------- the two clients


class AiohttpClient:
    name = "aiohttp"

    def __init__(self) -> None:
        self.http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, limit_per_host=0, keepalive_timeout=60, enable_cleanup_closed=True),
            auto_decompress=False,
            skip_auto_headers=("User-Agent",),
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        self.timeout = aiohttp.ClientTimeout(total=None, connect=10, sock_read=300)

    async def json(self, url: yarl.URL) -> int:
        resp = await self.http.request("POST", url, data=REQUEST_BODY, headers=dict(HEADERS), timeout=self.timeout)
        try:
            _ = resp.headers.get("Content-Type", ""), resp.headers.get("Mcp-Session-Id")
            n = resp.content_length
            if n is not None and n > LIMIT:
                raise RuntimeError("too large")
            data = await resp.content.read(LIMIT + 1)
            return len(data)
        finally:
            resp.release()

    async def sse(self, url: yarl.URL) -> int:
        resp = await self.http.request("POST", url, data=REQUEST_BODY, headers=dict(HEADERS), timeout=self.timeout)
        try:
            _ = resp.headers.get("Content-Type", ""), resp.headers.get("Mcp-Session-Id")
            n = 0
            async for chunk in resp.content.iter_any():
                n += len(chunk)
            return n
        finally:
            resp.release()

    async def close(self) -> None:
        await self.http.close()


class H1Client:
    name = "h1"

    def __init__(self) -> None:
        self.pool = h1.Pool(limit_per_host=0, keepalive_timeout=60)

    async def json(self, url: yarl.URL) -> int:
        resp = await self.pool.request("POST", url, dict(HEADERS), REQUEST_BODY, connect_timeout=10, read_timeout=300)
        try:
            _ = resp.headers.get("Content-Type", ""), resp.headers.get("Mcp-Session-Id")
            data = await resp.read(LIMIT)
            return len(data)
        finally:
            resp.release()

    async def sse(self, url: yarl.URL) -> int:
        resp = await self.pool.request("POST", url, dict(HEADERS), REQUEST_BODY, connect_timeout=10, read_timeout=300)
        try:
            _ = resp.headers.get("Content-Type", ""), resp.headers.get("Mcp-Session-Id")
            n = 0
            async for chunk in resp.iter_chunks():
                n += len(chunk)
            return n
        finally:
            resp.release()

    async def close(self) -> None:
        await self.pool.close()


# ---------------------------------------------------------------- measuring


def _proc_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _machine_busy() -> float:
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    return (sum(v[:8]) - idle) / os.sysconf("SC_CLK_TCK")


async def cell(call: Callable[[], Awaitable[int]], conc: int, warmup: int, n: int, server_pid: int) -> dict[str, Any]:
    async def worker(count: int, lat: list[float]) -> None:
        for _ in range(count):
            t = time.perf_counter()
            await call()
            lat.append(time.perf_counter() - t)

    per = [warmup // conc] * conc
    await asyncio.gather(*(worker(k, []) for k in per))
    lats: list[list[float]] = [[] for _ in range(conc)]
    per = [n // conc] * conc
    done = sum(per)
    busy0, srv0, wall0, cpu0 = _machine_busy(), _proc_cpu(server_pid), time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker(k, lat) for k, lat in zip(per, lats, strict=True)))
    cpu1, wall1, srv1, busy1 = time.process_time(), time.perf_counter(), _proc_cpu(server_pid), _machine_busy()
    all_lat = sorted(x for lat in lats for x in lat)
    wall = wall1 - wall0
    cpu = cpu1 - cpu0
    srv = srv1 - srv0
    return {
        "requests": done,
        "cpu_us": cpu / done * 1e6,
        "server_cpu_us": srv / done * 1e6,
        "req_s": done / wall,
        "p50_ms": all_lat[len(all_lat) // 2] * 1e3,
        "p99_ms": all_lat[int(len(all_lat) * 0.99)] * 1e3,
        "other_load_cores": max(0.0, (busy1 - busy0) - cpu - srv) / wall,
    }


def parser_bench(n: int, repeats: int) -> list[dict[str, Any]]:
    """httptools vs aiohttp's C response parser on the same bytes (headers as aiohttp's server sends them)."""
    import importlib

    import httptools
    from aiohttp.base_protocol import BaseProtocol

    def raw(body: bytes) -> bytes:
        return (
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
            b"Date: Tue, 24 Nov 2026 11:00:00 GMT\r\nServer: Python/3.11 aiohttp/3.14.5\r\n\r\n" % len(body)
        ) + body

    class Sink:
        def __init__(self) -> None:
            self.h: dict[str, str] = {}
            self.b: list[bytes] = []
            self.done = False

        def on_header(self, k: bytes, v: bytes) -> None:
            self.h[k.decode("latin-1").lower()] = v.decode("utf-8", "surrogateescape")

        def on_body(self, b: bytes) -> None:
            self.b.append(b)

        def on_message_complete(self) -> None:
            self.done = True

    def run_httptools(data: bytes) -> float:
        sink = Sink()
        p = httptools.HttpResponseParser(sink)
        t = time.process_time()
        for _ in range(n):
            sink.h = {}
            sink.b = []
            p.feed_data(data)
            _ = p.get_status_code(), p.should_keep_alive(), sink.h.get("content-type"), b"".join(sink.b)
        return (time.process_time() - t) / n * 1e6

    async def run_aiohttp(data: bytes) -> float:
        loop = asyncio.get_running_loop()
        aiohttp_c: Any = importlib.import_module("aiohttp._http_parser")  # the C parser, not the Python fallback
        p = aiohttp_c.HttpResponseParser(BaseProtocol(loop), loop, 2**16, auto_decompress=False)
        t = time.process_time()
        for _ in range(n):
            msgs, _up, _tail = p.feed_data(data)
            msg, payload = msgs[0]
            _ = msg.code, msg.should_close, msg.headers.get("Content-Type"), payload.read_nowait(-1)
        return (time.process_time() - t) / n * 1e6

    async def main() -> list[dict[str, Any]]:
        rows = []
        for label, body in (("small", SMALL), ("10k", BIG)):
            data = raw(body)
            a: list[float] = []
            b: list[float] = []
            for _ in range(repeats):
                a.append(run_httptools(data))
                b.append(await run_aiohttp(data))
            rows.append({"payload": label, "httptools_us": statistics.median(a), "aiohttp_c_us": statistics.median(b)})
        return rows

    return uvloop.run(main())


async def run_all(args: argparse.Namespace, base: str, server_pid: int) -> list[dict[str, Any]]:
    clients: list[AiohttpClient | H1Client] = [AiohttpClient(), H1Client()]
    payloads = [p for p in args.payloads.split(",") if p]
    concs = [int(c) for c in args.concurrency.split(",") if c]
    urls = {"small": yarl.URL(base + "/small"), "10k": yarl.URL(base + "/10k"), "sse": yarl.URL(base + "/sse")}
    # sanity: both clients read the same bytes
    for c in clients:
        assert await c.json(urls["small"]) == len(SMALL)
        assert await c.json(urls["10k"]) == len(BIG)
        assert await c.sse(urls["sse"]) == len(SSE)
    runs: list[dict[str, Any]] = []
    try:
        for r in range(args.repeats):
            for payload in payloads:
                for conc in concs:
                    order = clients if r % 2 == 0 else clients[::-1]
                    for c in order:
                        url = urls[payload]
                        fn = c.sse if payload == "sse" else c.json

                        async def call(fn: Callable[[yarl.URL], Awaitable[int]] = fn, url: yarl.URL = url) -> int:
                            return await fn(url)

                        res = await cell(call, conc, args.warmup, args.requests, server_pid)
                        res.update(client=c.name, payload=payload, conc=conc, repeat=r)
                        runs.append(res)
                        print(
                            f"  r{r} {payload:>5} c={conc:<2} {c.name:>7}: {res['cpu_us']:7.1f} µs CPU/req, "
                            f"p50 {res['p50_ms']:.3f} ms, {res['req_s']:.0f} req/s, "
                            f"other load {res['other_load_cores']:.2f} cores",
                            file=sys.stderr,
                            flush=True,
                        )
    finally:
        for c in clients:
            await c.close()
    return runs


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    keys = sorted({(r["payload"], r["conc"]) for r in runs}, key=lambda k: (["small", "10k", "sse"].index(k[0]), k[1]))
    for payload, conc in keys:
        cell_runs = [r for r in runs if r["payload"] == payload and r["conc"] == conc]
        by = {name: [r for r in cell_runs if r["client"] == name] for name in ("aiohttp", "h1")}
        ratios = [
            h["cpu_us"] / a["cpu_us"]
            for a, h in zip(by["aiohttp"], by["h1"], strict=True)
            if a["repeat"] == h["repeat"]
        ]

        def med(name: str, field: str, by: dict[str, list[dict[str, Any]]] = by) -> float:
            return float(statistics.median(r[field] for r in by[name]))

        rows.append(
            {
                "payload": payload,
                "conc": conc,
                "aiohttp_cpu_us": med("aiohttp", "cpu_us"),
                "h1_cpu_us": med("h1", "cpu_us"),
                "ratio": statistics.median(ratios),
                "saved_us": med("aiohttp", "cpu_us") - med("h1", "cpu_us"),
                "aiohttp_p50_ms": med("aiohttp", "p50_ms"),
                "h1_p50_ms": med("h1", "p50_ms"),
                "aiohttp_req_s": med("aiohttp", "req_s"),
                "h1_req_s": med("h1", "req_s"),
                "server_cpu_us": statistics.median(r["server_cpu_us"] for r in cell_runs),
                "other_load_max": max(r["other_load_cores"] for r in cell_runs),
            }
        )
    return rows


def markdown(rows: list[dict[str, Any]], parsers: list[dict[str, Any]]) -> str:
    out = [
        "| payload | conc | aiohttp CPU µs/req | h1 CPU µs/req | h1 / aiohttp | saved µs | p50 ms aiohttp → h1 "
        "| req/s aiohttp → h1 | other load (max, cores) |",
        "|---|---:|---:|---:|---:|---:|---|---|---:|",
    ]
    for r in rows:
        out.append(
            f"| {r['payload']} | {r['conc']} | {r['aiohttp_cpu_us']:.1f} | {r['h1_cpu_us']:.1f} "
            f"| \u00d7{r['ratio']:.2f} "
            f"| {r['saved_us']:.1f} | {r['aiohttp_p50_ms']:.3f} → {r['h1_p50_ms']:.3f} "
            f"| {r['aiohttp_req_s']:.0f} → {r['h1_req_s']:.0f} | {r['other_load_max']:.2f} |"
        )
    if parsers:
        out += ["", "| response parser (CPU µs per response) | httptools | aiohttp C parser |", "|---|---:|---:|"]
        for p in parsers:
            out.append(f"| {p['payload']} | {p['httptools_us']:.2f} | {p['aiohttp_c_us']:.2f} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--concurrency", default="1,8")
    ap.add_argument("--payloads", default="small,10k,sse")
    ap.add_argument("--no-parsers", action="store_true")
    ap.add_argument("--out", type=Path, default=None, help="write every raw figure to this JSON file")
    args = ap.parse_args(argv)
    if args.serve:
        serve()
        return 0
    cpus = sorted(os.sched_getaffinity(0))
    server_cpu, client_cpu = (cpus[0], cpus[1]) if len(cpus) >= 2 else (None, None)
    pre = (lambda: os.sched_setaffinity(0, {server_cpu})) if server_cpu is not None else None
    proc = subprocess.Popen([sys.executable, __file__, "--serve"], stdout=subprocess.PIPE, text=True, preexec_fn=pre)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("READY"):
            raise RuntimeError(f"server did not start: {line!r}")
        base = line.split()[-1]
        if client_cpu is not None:
            os.sched_setaffinity(0, {client_cpu})
        started = dt.datetime.now(dt.UTC)
        load0 = os.getloadavg()
        runs = uvloop.run(run_all(args, base, proc.pid))
        parsers = [] if args.no_parsers else parser_bench(20_000, args.repeats)
        rows = summarise(runs)
        md = markdown(rows, parsers)
        print(md)
        if args.out is not None:
            git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
            meta = {
                "started": started.isoformat(),
                "argv": sys.argv,
                "git": git.stdout.strip(),
                "python": platform.python_version(),
                "aiohttp": aiohttp.__version__,
                "cpus": cpus,
                "pinning": {"server": server_cpu, "client": client_cpu},
                "loadavg": [load0, os.getloadavg()],
            }
            args.out.write_text(
                json.dumps({"meta": meta, "summary": rows, "parsers": parsers, "runs": runs, "markdown": md}, indent=1)
            )
    finally:
        proc.terminate()
        proc.wait(5)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
