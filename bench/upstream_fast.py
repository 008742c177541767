"""A minimal, fast MCP server over Streamable HTTP (aiohttp + uvloop), used as the benchmark upstream.

It is deliberately tiny so that it is never the bottleneck of a benchmark:
responses for the fixed tools are pre-serialised and only the JSON-RPC id is spliced in.

Both wire eras on one endpoint (``/mcp``):

* session era (2025-03-26 .. 2025-11-25): ``initialize`` mints an ``Mcp-Session-Id``;
  ``notifications/initialized`` -> 202; later requests need a known session id (unknown -> 404);
  ``DELETE`` ends the session (200).
* 2026-07-28 (stateless): ``server/discover`` and any request whose ``params._meta`` carries
  ``io.modelcontextprotocol/protocolVersion: 2026-07-28``; no session; GET/DELETE -> 405 for such clients.

Tools: ``echo`` (small result echoing ``arguments.text``), ``blob10k`` (10 KB text), ``blob1m`` (1 MiB text),
``mixed10k`` (10 KB of realistic mixed tool output — log lines, config, a JSON row — with a few secrets and PII in
it, the masking benchmark's payload).

Responses are ``application/json``; with ``--sse`` a client whose ``Accept`` lists ``text/event-stream``
gets a one-event SSE stream instead.

Usage: python bench/upstream_fast.py [--port 0] [--sse]
Prints ``READY http://127.0.0.1:PORT/mcp`` (flushed) once listening.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import signal
import sys

import orjson
from aiohttp import web

SESSION_VERSIONS = ("2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05")
V2026 = "2026-07-28"
ALL_VERSIONS = (V2026, *SESSION_VERSIONS)
LATEST_SESSION = "2025-11-25"
META_VERSION = "io.modelcontextprotocol/protocolVersion"
SERVER_INFO = {"name": "bench-upstream-fast", "version": "1.0.0"}
CAPABILITIES = {"tools": {"listChanged": False}}

TOOLS = [
    {
        "name": "echo",
        "description": "Echo the text argument back.",
        "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}},
        "annotations": {"readOnlyHint": True, "destructiveHint": False, "openWorldHint": False},
    },
    {
        "name": "blob10k",
        "description": "Return a 10 KB text result.",
        "inputSchema": {"type": "object", "properties": {}},
        "annotations": {"readOnlyHint": True, "destructiveHint": False, "openWorldHint": False},
    },
    {
        "name": "mixed10k",
        "description": "Return 10 KB of mixed tool output with a few secrets in it.",
        "inputSchema": {"type": "object", "properties": {}},
        "annotations": {"readOnlyHint": True, "destructiveHint": False, "openWorldHint": False},
    },
    {
        "name": "blob1m",
        "description": "Return a 1 MiB text result.",
        "inputSchema": {"type": "object", "properties": {}},
        "annotations": {"readOnlyHint": True, "destructiveHint": False, "openWorldHint": False},
    },
]


def _text(n: int) -> str:
    unit = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_"  # 64 chars, no escaping needed
    return (unit * (n // len(unit) + 1))[:n]


_MIXED_LINES = (
    "2026-11-24T12:{m:02d}:{s:02d}.{ms:03d}Z INFO  api.request method=GET path=/v1/orders/{n} status=200 dur_ms={d}",
    "2026-11-24T12:{m:02d}:{s:02d}.{ms:03d}Z DEBUG cache.hit key=orders:{n} ttl=300 node=cache-{d}",
    "2026-11-24T12:{m:02d}:{s:02d}.{ms:03d}Z WARN  retry attempt={d} upstream=payments-{n} backoff_ms=250",
    '{{"id": {n}, "sku": "SKU-{d}-{n}", "qty": {d}, "status": "shipped", "updated": "2026-11-24T12:{m:02d}:00Z"}}',
    "  replicas: {d}\n  image: registry.internal/app:1.{d}.{n}\n  resources: {{limits: {{cpu: 500m}}}}",
)
_MIXED_SECRETS = (
    "2026-11-24T12:00:00.000Z ERROR auth failed for ann.lee@example.com token=ghp_A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8",
    "DATABASE_URL=postgres://app:Xk93-pqLm2@db.internal:5432/app",
    "customer card 4539 1488 0343 6467 phone +44 20 7946 0958",
)


def _mixed(n: int) -> str:
    out: list[str] = []
    size = 0
    i = 0
    while size < n:
        if i % 25 == 12:
            line = _MIXED_SECRETS[(i // 25) % len(_MIXED_SECRETS)]
        else:
            fmt = _MIXED_LINES[i % len(_MIXED_LINES)]
            line = fmt.format(m=i % 60, s=(i * 7) % 60, ms=i % 1000, n=1000 + i, d=i % 9)
        out.append(line)
        size += len(line) + 1
        i += 1
    return "\n".join(out)[:n]


def _blob_result(n: int, era2026: bool, mixed: bool = False) -> bytes:
    text = _mixed(n) if mixed else _text(n)
    r: dict[str, object] = {"content": [{"type": "text", "text": text}], "isError": False}
    if era2026:
        r["resultType"] = "complete"
    return orjson.dumps(r)


# Pre-serialised result bodies, per era.
BLOBS = {
    (name, era): _blob_result(size, era, mixed=name == "mixed10k")
    for name, size in (("blob10k", 10_000), ("blob1m", 1_048_576), ("mixed10k", 10_000))
    for era in (False, True)
}
TOOLS_LIST = {
    False: orjson.dumps({"tools": TOOLS}),
    True: orjson.dumps({"tools": TOOLS, "resultType": "complete", "ttlMs": 60_000, "cacheScope": "public"}),
}
DISCOVER = orjson.dumps(
    {
        "supportedVersions": list(ALL_VERSIONS),
        "capabilities": CAPABILITIES,
        "serverInfo": SERVER_INFO,
        "resultType": "complete",
        "ttlMs": 60_000,
        "cacheScope": "public",
    }
)
EMPTY = {False: b"{}", True: b'{"resultType":"complete"}'}

JSON_CT = "application/json"
SSE_CT = "text/event-stream"


class Upstream:
    def __init__(self, sse: bool) -> None:
        self.sse = sse
        self.sessions: set[str] = set()

    # -- helpers -------------------------------------------------------------------------------------------------
    def _reply(
        self, request: web.Request, payload: bytes, headers: dict[str, str] | None = None, status: int = 200
    ) -> web.Response:
        if self.sse and status == 200 and SSE_CT in request.headers.get("Accept", ""):
            body = b"event: message\ndata: " + payload + b"\n\n"
            h = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
            if headers:
                h.update(headers)
            return web.Response(body=body, status=status, content_type=SSE_CT, headers=h)
        return web.Response(body=payload, status=status, content_type=JSON_CT, headers=headers)

    @staticmethod
    def _result(rid: bytes, result: bytes) -> bytes:
        return b'{"jsonrpc":"2.0","id":' + rid + b',"result":' + result + b"}"

    @staticmethod
    def _error(rid: bytes, code: int, message: str, data: object = None) -> bytes:
        err: dict[str, object] = {"code": code, "message": message}
        if data is not None:
            err["data"] = data
        return b'{"jsonrpc":"2.0","id":' + rid + b',"error":' + orjson.dumps(err) + b"}"

    def _err_response(self, rid: bytes, status: int, code: int, message: str, data: object = None) -> web.Response:
        return web.Response(body=self._error(rid, code, message, data), status=status, content_type=JSON_CT)

    # -- handlers ------------------------------------------------------------------------------------------------
    async def post(self, request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            msg = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return self._err_response(b"null", 400, -32700, "parse error")
        if not isinstance(msg, dict):
            return self._err_response(b"null", 400, -32600, "batches are not supported")
        method = msg.get("method")
        if not isinstance(method, str):
            # A response from the client (to a server->client request we never send): accept it.
            return web.Response(status=202)
        params = msg.get("params") or {}
        meta = params.get("_meta") if isinstance(params, dict) else None
        is_request = "id" in msg
        rid = orjson.dumps(msg.get("id")) if is_request else b"null"

        # ---- 2026-07-28, stateless ----
        meta_version = meta.get(META_VERSION) if isinstance(meta, dict) else None
        if method == "server/discover" or meta_version is not None:
            hdr_version = request.headers.get("MCP-Protocol-Version")
            if meta_version is not None and meta_version not in ALL_VERSIONS:
                return self._err_response(
                    rid, 400, -32022, "unsupported protocol version", {"supported": list(ALL_VERSIONS)}
                )
            if meta_version is not None and hdr_version is not None and hdr_version != meta_version:
                return self._err_response(rid, 400, -32020, "MCP-Protocol-Version header does not match _meta")
            hdr_method = request.headers.get("Mcp-Method")
            if hdr_method is not None and hdr_method != method:
                return self._err_response(rid, 400, -32020, "Mcp-Method header does not match body")
            if not is_request:
                return web.Response(status=202)
            return self._dispatch(request, method, params, rid, True)

        # ---- session era ----
        if method == "initialize":
            wanted = params.get("protocolVersion") if isinstance(params, dict) else None
            version = wanted if wanted in SESSION_VERSIONS else LATEST_SESSION
            sid = secrets.token_urlsafe(24)
            self.sessions.add(sid)
            result = orjson.dumps({"protocolVersion": version, "capabilities": CAPABILITIES, "serverInfo": SERVER_INFO})
            return self._reply(request, self._result(rid, result), {"Mcp-Session-Id": sid})
        sid = request.headers.get("Mcp-Session-Id")
        if sid is None:
            return self._err_response(rid, 400, -32600, "missing Mcp-Session-Id")
        if sid not in self.sessions:
            return self._err_response(rid, 404, -32001, "unknown session")
        hv = request.headers.get("MCP-Protocol-Version")
        if hv is not None and hv not in SESSION_VERSIONS:
            return self._err_response(rid, 400, -32600, f"unsupported MCP-Protocol-Version {hv}")
        if not is_request:
            return web.Response(status=202)
        return self._dispatch(request, method, params, rid, False)

    def _dispatch(self, request: web.Request, method: str, params: dict, rid: bytes, era2026: bool) -> web.Response:
        if method == "tools/call":
            name = params.get("name")
            if name == "echo":
                args = params.get("arguments") or {}
                text = args.get("text", "ok") if isinstance(args, dict) else "ok"
                r: dict[str, object] = {"content": [{"type": "text", "text": text}], "isError": False}
                if era2026:
                    r["resultType"] = "complete"
                return self._reply(request, self._result(rid, orjson.dumps(r)))
            blob = BLOBS.get((name, era2026)) if isinstance(name, str) else None
            if blob is not None:
                return self._reply(request, self._result(rid, blob))
            return self._reply(request, self._error(rid, -32602, f"unknown tool {name!r}"))
        if method == "tools/list":
            return self._reply(request, self._result(rid, TOOLS_LIST[era2026]))
        if method == "server/discover":
            return self._reply(request, self._result(rid, DISCOVER))
        if method == "ping":
            return self._reply(request, self._result(rid, EMPTY[era2026]))
        if era2026:
            return self._err_response(rid, 404, -32601, f"method not found: {method}")
        return self._reply(request, self._error(rid, -32601, f"method not found: {method}"))

    async def delete(self, request: web.Request) -> web.Response:
        sid = request.headers.get("Mcp-Session-Id")
        if sid is None:
            return web.Response(status=405)
        if sid not in self.sessions:
            return web.Response(status=404)
        self.sessions.discard(sid)
        return web.Response(status=200)

    async def get(self, request: web.Request) -> web.Response:
        # No standalone server->client stream.
        return web.Response(status=405, headers={"Allow": "POST, DELETE"})


async def serve(port: int, sse: bool, host: str = "127.0.0.1") -> None:
    up = Upstream(sse)

    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        # aiohttp's low-level server: no router, no middlewares, no access log.
        if request.path != "/mcp":
            return web.Response(status=404)
        m = request.method
        if m == "POST":
            return await up.post(request)  # type: ignore[arg-type]
        if m == "DELETE":
            return await up.delete(request)  # type: ignore[arg-type]
        if m == "GET":
            return await up.get(request)  # type: ignore[arg-type]
        return web.Response(status=405, headers={"Allow": "GET, POST, DELETE"})

    server = web.Server(handler, access_log=None)
    runner = web.ServerRunner(server, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024, reuse_address=True)
    await site.start()
    real_port = runner.addresses[0][1]
    print(f"READY http://{host}:{real_port}/mcp", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=0, help="port to bind on 127.0.0.1 (0 = any free port)")
    ap.add_argument("--sse", action="store_true", help="answer with SSE when the client accepts text/event-stream")
    args = ap.parse_args(argv)
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        asyncio.run(serve(args.port, args.sse))
    else:
        uvloop.run(serve(args.port, args.sse))
    return 0


if __name__ == "__main__":
    sys.exit(main())
