"""portcullis.upstream.h1 against real servers on 127.0.0.1 (aiohttp; a raw asyncio server for malformed cases).

Every test runs on both the asyncio and the uvloop event loop (production uses uvloop).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any

import pytest
import uvloop
import yarl
from aiohttp import web

pytest.importorskip("httptools", reason="portcullis.upstream.h1 needs httptools (not yet a declared dependency)")

from portcullis.upstream import h1
from portcullis.wire import sse

Scenario = Callable[[], Coroutine[Any, Any, None]]


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Callable[[Scenario], None]:
    def go(scenario: Scenario) -> None:
        async def bounded() -> None:
            async with asyncio.timeout(20):
                await scenario()

        if request.param == "uvloop":
            uvloop.run(bounded())
        else:
            asyncio.run(bounded())

    return go


class Server:
    """An aiohttp app on 127.0.0.1 that records the peers (client ports) it saw and the request headers."""

    def __init__(self) -> None:
        self.app = web.Application()
        self.peers: set[Any] = set()
        self.seen: list[dict[str, str]] = []
        self.raw_seen: list[list[tuple[bytes, bytes]]] = []
        self.url = yarl.URL()

    def route(self, method: str, path: str, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> None:
        async def wrapped(req: web.Request) -> web.StreamResponse:
            assert req.transport is not None
            self.peers.add(req.transport.get_extra_info("peername"))
            self.seen.append(dict(req.headers))
            self.raw_seen.append(list(req.raw_headers))
            return await handler(req)

        self.app.router.add_route(method, path, wrapped)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Server]:
        runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=0.2)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.url = yarl.URL(f"http://127.0.0.1:{runner.addresses[0][1]}")
        try:
            yield self
        finally:
            await runner.cleanup()


@contextlib.asynccontextmanager
async def raw_server(
    handle: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> AsyncIterator[yarl.URL]:
    """A bare TCP server, for responses aiohttp would not send."""

    async def wrapped(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            await handle(r, w)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            w.close()

    server = await asyncio.start_server(wrapped, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield yarl.URL(f"http://127.0.0.1:{port}")
    finally:
        server.close()
        await server.wait_closed()


async def read_request(r: asyncio.StreamReader) -> bytes:
    head = await r.readuntil(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            await r.readexactly(int(line.split(b":")[1]))
    return head


@contextlib.asynccontextmanager
async def pool(**kw: Any) -> AsyncIterator[h1.Pool]:
    p = h1.Pool(**kw)
    try:
        yield p
    finally:
        await p.close()


T = {"connect_timeout": 5.0, "read_timeout": 5.0}


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


# ------------------------------------------------------------------------------------------------ bodies


def test_content_length_body_headers_and_case(run: Callable[[Scenario], None]) -> None:
    async def scenario() -> None:
        srv = Server()

        async def echo(req: web.Request) -> web.StreamResponse:
            body = await req.read()
            return web.Response(
                body=b'{"got":' + body + b"}",
                content_type="application/json",
                headers={"mcp-session-id": "s-1", "X-Dup": "a"},
            )

        srv.route("POST", "/mcp", echo)
        async with srv.running(), pool() as p:
            headers = {"Content-Type": "application/json", "Mcp-Param-Region": "eu", "MCP-Protocol-Version": "x"}
            resp = await p.request("POST", srv.url / "mcp", headers, b"[1,2]", **T)
            assert resp.status == 200
            # case-insensitive lookups, whatever case the server used
            assert resp.headers.get("Mcp-Session-Id") == "s-1" == resp.headers.get("MCP-SESSION-ID")
            assert resp.headers.get("content-type", "").startswith("application/json")
            assert resp.headers.get("Content-Type") == resp.headers["CONTENT-TYPE"]
            assert "x-dup" in resp.headers and "nope" not in resp.headers
            assert resp.headers.get("Missing") is None and resp.headers.get("Missing", "d") == "d"
            assert resp.content_length == len(b'{"got":[1,2]}')
            assert await resp.read(1000) == b'{"got":[1,2]}'
            assert resp.complete
            resp.release()
            seen = srv.seen[0]
            assert seen["Host"] == f"127.0.0.1:{srv.url.port}"
            assert seen["Content-Length"] == "5" and seen["Mcp-Param-Region"] == "eu"
            # names go out with the caller's case
            assert (b"MCP-Protocol-Version", b"x") in srv.raw_seen[0]

    run(scenario)


def test_chunked_body(run: Callable[[Scenario], None]) -> None:
    async def scenario() -> None:
        srv = Server()

        async def chunked(req: web.Request) -> web.StreamResponse:
            resp = web.StreamResponse(headers={"Content-Type": "application/json"})
            resp.enable_chunked_encoding()
            await resp.prepare(req)
            for part in (b'{"a":', b"1", b"}"):
                await resp.write(part)
                await asyncio.sleep(0.01)
            await resp.write_eof()
            return resp

        srv.route("GET", "/c", chunked)
        async with srv.running(), pool() as p:
            for _ in range(2):  # and the connection is reusable after a chunked body
                resp = await p.request("GET", srv.url / "c", {}, None, **T)
                assert resp.headers.get("Transfer-Encoding") == "chunked" and resp.content_length is None
                assert await resp.read(100) == b'{"a":1}'
            assert len(srv.peers) == 1 and p.idle_count() == 1

    run(scenario)


def test_sse_streams_chunk_by_chunk(run: Callable[[Scenario], None]) -> None:
    async def scenario() -> None:
        srv = Server()
        first_seen = asyncio.Event()

        async def stream(req: web.Request) -> web.StreamResponse:
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(req)
            await resp.write(b'id: 1\ndata: {"n":1}\n\n')
            # the second event is sent only once the client has parsed the first: nothing waits for the whole body
            await asyncio.wait_for(first_seen.wait(), 5)
            await resp.write(b'id: 2\ndata: {"n":')
            await asyncio.sleep(0.01)
            await resp.write(b"2}\n\n")
            await resp.write_eof()
            return resp

        srv.route("POST", "/sse", stream)
        async with srv.running(), pool() as p:
            resp = await p.request("POST", srv.url / "sse", {"Accept": "text/event-stream"}, b"{}", **T)
            assert resp.headers.get("content-type") == "text/event-stream"
            parser = sse.SSEParser()
            events: list[sse.Event] = []
            async for chunk in resp.iter_chunks():
                assert chunk
                events += parser.feed(chunk)
                if len(events) == 1:
                    first_seen.set()
            assert [(e.id, e.data) for e in events] == [("1", b'{"n":1}'), ("2", b'{"n":2}')]
            resp.release()
            assert p.idle_count() == 1  # the stream ended cleanly: the connection is reusable
            resp = await p.request("POST", srv.url / "sse", {}, b"{}", **T)
            first_seen.set()
            assert b"".join([c async for c in resp.iter_chunks()]).count(b"data:") == 2
            assert len(srv.peers) == 1

    run(scenario)


def test_202_and_204_have_empty_bodies(run: Callable[[Scenario], None]) -> None:
    async def scenario() -> None:
        srv = Server()

        async def accepted(req: web.Request) -> web.StreamResponse:
            await req.read()
            return web.Response(status=202)

        async def nothing(req: web.Request) -> web.StreamResponse:
            return web.Response(status=204)

        srv.route("POST", "/n", accepted)
        srv.route("DELETE", "/n", nothing)
        async with srv.running(), pool() as p:
            resp = await p.request("POST", srv.url / "n", {"Content-Type": "application/json"}, b"{}", **T)
            assert resp.status == 202 and resp.complete  # complete with the head: already back in the pool
            assert await resp.read(10) == b""
            assert [c async for c in resp.iter_chunks()] == []
            resp.release()
            resp = await p.request("DELETE", srv.url / "n", {}, None, **T)
            assert resp.status == 204 and await resp.read() == b""
            resp = await p.request("POST", srv.url / "n", {}, b"", **T)  # an empty body still says Content-Length: 0
            assert resp.status == 202 and srv.seen[-1]["Content-Length"] == "0"
            assert len(srv.peers) == 1

    run(scenario)


def test_body_larger_than_limit(run: Callable[[Scenario], None]) -> None:
    async def scenario() -> None:
        srv = Server()
        release = asyncio.Event()

        async def big(req: web.Request) -> web.StreamResponse:
            return web.Response(body=b"x" * 5000)

        async def big_chunked_stalls(req: web.Request) -> web.StreamResponse:
            resp = web.StreamResponse()
            resp.enable_chunked_encoding()
            await resp.prepare(req)
            for _ in range(50):
                await resp.write(b"y" * 100)
            with contextlib.suppress(TimeoutError, ConnectionError):
                await asyncio.wait_for(release.wait(), 3)
                await resp.write_eof()
            return resp

        srv.route("GET", "/big", big)
        srv.route("GET", "/bigc", big_chunked_stalls)
        async with srv.running(), pool() as p:
            resp = await p.request("GET", srv.url / "big", {}, None, **T)
            with pytest.raises(h1.TooLarge, match="5000 bytes"):  # from Content-Length
                await resp.read(4999)
            resp = await p.request("GET", srv.url / "bigc", {}, None, **T)
            with pytest.raises(h1.TooLarge):  # counted as it arrives, mid-body
                await resp.read(1000)
            await settle()
            assert p.open_count() <= 1  # the mid-body connection was closed, not pooled
            resp = await p.request("GET", srv.url / "big", {}, None, **T)
            assert len(await resp.read(5000)) == 5000
            release.set()

    run(scenario)


# ------------------------------------------------------------------------------------------------ connections


def test_keep_alive_reuse(run: Callable[[Scenario], None]) -> None:
    async def scenario() -> None:
        srv = Server()

        async def ok(req: web.Request) -> web.StreamResponse:
            return web.json_response({"ok": True})

        srv.route("POST", "/", ok)
        async with srv.running(), pool() as p:
            for _ in range(10):
                resp = await p.request("POST", srv.url, {}, b"{}", **T)
                assert await resp.read() == b'{"ok": true}'
                resp.release()
            assert len(srv.peers) == 1
            assert p.open_count() == 1 and p.idle_count() == 1 and p.idle_count(srv.url) == 1

    run(scenario)


def test_server_closes_the_connection(run: Callable[[Scenario], None]) -> None:
    async def scenario() -> None:
        srv = Server()

        async def once(req: web.Request) -> web.StreamResponse:
            resp = web.json_response({"bye": 1})
            resp.force_close()  # Connection: close
            return resp

        srv.route("GET", "/", once)
        async with srv.running(), pool() as p:
            for _ in range(3):
                resp = await p.request("GET", srv.url, {}, None, **T)
                assert resp.headers.get("Connection") == "close"
                assert await resp.read() == b'{"bye": 1}'
                assert p.idle_count() == 0  # never pooled
            assert len(srv.peers) == 3
            await settle()
            assert p.open_count() == 0

    run(scenario)


def test_server_closes_idle_connection_then_new_one(run: Callable[[Scenario], None]) -> None:
    async def scenario() -> None:
        async with raw_server(_one_request_then_close) as url, pool() as p:
            resp = await p.request("GET", url, {}, None, **T)
            assert await resp.read() == b"ok"
            for _ in range(50):  # the server's FIN takes the idle connection out of the pool
                if p.idle_count() == 0:
                    break
                await asyncio.sleep(0.01)
            assert p.idle_count() == 0
            resp = await p.request("POST", url, {}, b"x", **T)
            assert await resp.read() == b"ok"

    run(scenario)


async def _one_request_then_close(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    await read_request(r)
    w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")  # keep-alive, but the server closes anyway
    await w.drain()


def test_stale_connection_retried_for_get_not_for_post(run: Callable[[Scenario], None]) -> None:
    async def scenario() -> None:
        conns = 0

        async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            nonlocal conns
            conns += 1
            await read_request(r)
            w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await w.drain()
            await read_request(r)  # the second request on this connection: dropped without a byte of answer

        async with raw_server(handle) as url, pool() as p:
            resp = await p.request("GET", url, {}, None, **T)
            assert await resp.read() == b"ok"
            resp = await p.request("GET", url, {}, None, **T)  # idempotent: retried once on a new connection
            assert await resp.read() == b"ok" and conns == 2
            with pytest.raises(h1.ServerDisconnected, match="before the response head"):
                await p.request("POST", url, {}, b"{}", **T)  # not idempotent: never sent twice
            assert conns == 2
            resp = await p.request("POST", url, {}, b"{}", **T)
            assert await resp.read() == b"ok" and conns == 3

    run(scenario)


def test_server_dies_mid_body(run: Callable[[Scenario], None]) -> None:
    async def scenario() -> None:
        srv = Server()

        async def dies(req: web.Request) -> web.StreamResponse:
            resp = web.StreamResponse()
            resp.content_length = 1000
            await resp.prepare(req)
            await resp.write(b"z" * 100)
            await asyncio.sleep(0.05)
            assert req.transport is not None
            req.transport.close()
            return resp

        async def dies_streaming(req: web.Request) -> web.StreamResponse:
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(req)
            await resp.write(b"data: 1\n\n")
            await asyncio.sleep(0.05)
            assert req.transport is not None
            req.transport.close()
            return resp

        srv.route("GET", "/dies", dies)
        srv.route("GET", "/sse", dies_streaming)
        async with srv.running(), pool() as p:
            resp = await p.request("GET", srv.url / "dies", {}, None, **T)
            with pytest.raises(h1.ServerDisconnected, match="mid-body"):
                await resp.read(10_000)
            resp = await p.request("GET", srv.url / "sse", {}, None, **T)
            got: list[bytes] = []
            with pytest.raises(h1.ServerDisconnected, match="mid-body"):
                async for chunk in resp.iter_chunks():
                    got.append(chunk)
            assert got == [b"data: 1\n\n"]  # what arrived before the break is delivered first
            await settle()
            assert p.open_count() == 0

    run(scenario)


def test_body_until_close(run: Callable[[Scenario], None]) -> None:
    async def scenario() -> None:
        async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            await read_request(r)
            w.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nhel")
            await w.drain()
            await asyncio.sleep(0.02)
            w.write(b"lo")

        async with raw_server(handle) as url, pool() as p:
            resp = await p.request("GET", url, {}, None, **T)
            assert resp.content_length is None
            assert await resp.read(100) == b"hello"
            assert p.idle_count() == 0

    run(scenario)


def test_interim_responses_are_skipped(run: Callable[[Scenario], None]) -> None:
    async def scenario() -> None:
        async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            await read_request(r)
            w.write(b"HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n")
            await w.drain()
            await asyncio.sleep(0.01)
            w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Final: 1\r\n\r\nok")
            await w.drain()
            await read_request(r)

        async with raw_server(handle) as url, pool() as p:
            resp = await p.request("GET", url, {}, None, **T)
            assert resp.status == 200 and resp.headers.get("x-final") == "1" and "link" not in resp.headers
            assert await resp.read() == b"ok"

    run(scenario)


@pytest.mark.parametrize(
    ("reply", "match"),
    [
        (b"NOT HTTP AT ALL\r\n\r\n", "invalid HTTP response"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok", "invalid HTTP response"),
        (b"HTTP/1.1 200 OK\r\n" + b"X-Big: " + b"a" * 70_000 + b"\r\n\r\n", "head larger"),
        (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n", "switched protocols"),
    ],
)
def test_bad_responses(run: Callable[[Scenario], None], reply: bytes, match: str) -> None:
    async def scenario() -> None:
        async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            await read_request(r)
            w.write(reply)
            await w.drain()
            await asyncio.sleep(1)

        async with raw_server(handle) as url, pool() as p:
            with pytest.raises(h1.BadResponse, match=match):
                await p.request("GET", url, {}, None, **T)
            await settle()
            assert p.open_count() == 0

    run(scenario)


def test_extra_bytes_after_response_drop_the_connection(run: Callable[[Scenario], None]) -> None:
    async def scenario() -> None:
        async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            await read_request(r)
            w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n")
            await w.drain()
            await asyncio.sleep(1)

        async with raw_server(handle) as url, pool() as p:
            resp = await p.request("GET", url, {}, None, **T)
            assert await resp.read() == b"ok"  # the response itself is fine
            await settle()
            assert p.idle_count() == 0 and p.open_count() == 0

    run(scenario)


# ------------------------------------------------------------------------------------------------ timeouts, bounds


def test_read_timeouts_are_bounded(run: Callable[[Scenario], None]) -> None:
    async def scenario() -> None:
        srv = Server()
        release = asyncio.Event()

        async def slow_head(req: web.Request) -> web.StreamResponse:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(release.wait(), 3)
            return web.Response(text="late")

        async def slow_body(req: web.Request) -> web.StreamResponse:
            resp = web.StreamResponse()
            resp.content_length = 10
            await resp.prepare(req)
            await resp.write(b"12345")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(release.wait(), 3)
            return resp

        srv.route("GET", "/head", slow_head)
        srv.route("GET", "/body", slow_body)
        async with srv.running(), pool() as p:
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            with pytest.raises(TimeoutError):
                await p.request("GET", srv.url / "head", {}, None, connect_timeout=5, read_timeout=0.2)
            assert 0.15 < loop.time() - t0 < 1.5
            resp = await p.request("GET", srv.url / "body", {}, None, connect_timeout=5, read_timeout=0.2)
            t0 = loop.time()
            with pytest.raises(TimeoutError):
                await resp.read()
            assert 0.15 < loop.time() - t0 < 1.5
            await settle()
            assert p.open_count() == 0  # timed-out connections are closed, never reused
            release.set()

    run(scenario)


def test_streaming_read_timeout_is_per_wait(run: Callable[[Scenario], None]) -> None:
    async def scenario() -> None:
        srv = Server()

        async def trickle(req: web.Request) -> web.StreamResponse:
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(req)
            for _ in range(10):  # 1 s in all, never more than 0.1 s between chunks
                await resp.write(b": ping\n\n")
                await asyncio.sleep(0.1)
            await resp.write_eof()
            return resp

        srv.route("GET", "/t", trickle)
        async with srv.running(), pool() as p:
            resp = await p.request("GET", srv.url / "t", {}, None, connect_timeout=5, read_timeout=0.5)
            assert len([c async for c in resp.iter_chunks()]) >= 3

    run(scenario)


def test_connect_refused_and_pool_wait_timeout(run: Callable[[Scenario], None]) -> None:
    async def scenario() -> None:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()  # nothing listens there
        async with pool() as p:
            with pytest.raises(h1.ConnectError, match="cannot connect"):
                await p.request("GET", yarl.URL(f"http://127.0.0.1:{port}/"), {}, None, **T)
            assert p.open_count() == 0

        srv = Server()

        async def stream(req: web.Request) -> web.StreamResponse:
            resp = web.StreamResponse()
            resp.enable_chunked_encoding()
            await resp.prepare(req)
            await resp.write(b"a")
            with contextlib.suppress(TimeoutError):
                await asyncio.sleep(2)
            return resp

        srv.route("GET", "/s", stream)
        async with srv.running(), pool(limit_per_host=1) as p:
            loop = asyncio.get_running_loop()
            held = await p.request("GET", srv.url / "s", {}, None, **T)
            t0 = loop.time()
            with pytest.raises(TimeoutError):  # waiting for the pool's bound counts against connect_timeout
                await p.request("GET", srv.url / "s", {}, None, connect_timeout=0.2, read_timeout=5)
            assert 0.15 < loop.time() - t0 < 1.5
            held.close()  # frees the slot: the next request connects
            resp = await p.request("GET", srv.url / "s", {}, None, **T)
            assert resp.status == 200
            resp.close()

    run(scenario)


def test_pool_bound(run: Callable[[Scenario], None]) -> None:
    async def scenario() -> None:
        srv = Server()
        active = peak = 0

        async def slow(req: web.Request) -> web.StreamResponse:
            nonlocal active, peak
            active += 1
            peak = max(peak, active)
            await asyncio.sleep(0.03)
            active -= 1
            return web.Response(body=b"done")

        srv.route("POST", "/", slow)
        async with srv.running(), pool(limit_per_host=2) as p:

            async def one() -> bytes:
                resp = await p.request("POST", srv.url, {}, b"{}", **T)
                return await resp.read()

            assert await asyncio.gather(*(one() for _ in range(8))) == [b"done"] * 8
            assert peak == 2 and len(srv.peers) == 2 and p.open_count() == 2

    run(scenario)


def test_cancelled_pool_waiter_does_not_swallow_the_connection(run: Callable[[Scenario], None]) -> None:
    async def scenario() -> None:
        srv = Server()
        go = asyncio.Event()

        async def gated(req: web.Request) -> web.StreamResponse:
            await asyncio.wait_for(go.wait(), 5)
            return web.Response(text="ok")

        srv.route("GET", "/", gated)
        async with srv.running(), pool(limit_per_host=1) as p:
            first = asyncio.ensure_future(p.request("GET", srv.url, {}, None, **T))
            await asyncio.sleep(0.05)
            waiting = [asyncio.ensure_future(p.request("GET", srv.url, {}, None, **T)) for _ in range(3)]
            await asyncio.sleep(0.05)
            waiting[0].cancel()
            waiting[1].cancel()
            go.set()
            resp = await first
            assert await resp.read() == b"ok"
            with pytest.raises(asyncio.CancelledError):
                await waiting[0]
            resp = await waiting[2]  # handed the connection the cancelled waiters no longer want
            assert await resp.read() == b"ok"
            assert len(srv.peers) == 1 and p.open_count() == 1

    run(scenario)


def test_flow_control_bounds_buffering(run: Callable[[Scenario], None]) -> None:
    async def scenario() -> None:
        srv = Server()
        total = 8 * 1024 * 1024

        async def firehose(req: web.Request) -> web.StreamResponse:
            resp = web.StreamResponse()
            resp.enable_chunked_encoding()
            await resp.prepare(req)
            block = b"f" * 65536
            for _ in range(total // len(block)):
                await resp.write(block)
            await resp.write_eof()
            return resp

        srv.route("GET", "/f", firehose)
        async with srv.running(), pool() as p:
            resp = await p.request("GET", srv.url / "f", {}, None, **T)
            n = biggest = 0
            async for chunk in resp.iter_chunks():
                n += len(chunk)
                biggest = max(biggest, len(chunk))
                await asyncio.sleep(0.001)  # a slow reader
            assert n == total
            assert biggest <= h1.HIGH_WATER + 1024 * 1024  # never the whole body
            assert p.idle_count() == 1

    run(scenario)


# ------------------------------------------------------------------------------------------------ release, cancel


def test_release_mid_body_closes_and_close_cancels(run: Callable[[Scenario], None]) -> None:
    async def scenario() -> None:
        srv = Server()
        gone = asyncio.Event()

        async def endless(req: web.Request) -> web.StreamResponse:
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(req)
            try:
                while True:
                    await resp.write(b": tick\n\n")
                    await asyncio.sleep(0.01)
            except ConnectionError:
                gone.set()
            return resp

        srv.route("GET", "/e", endless)
        async with srv.running(), pool() as p:
            resp = await p.request("GET", srv.url / "e", {}, None, **T)
            async for _chunk in resp.iter_chunks():
                break
            resp.close()  # cancel: drop the connection; the server sees it go
            await asyncio.wait_for(gone.wait(), 5)
            await settle()
            assert p.open_count() == 0
            gone.clear()
            resp = await p.request("GET", srv.url / "e", {}, None, **T)
            resp.release()  # released unread, mid-body: closed, not pooled
            with pytest.raises(h1.H1Error, match="released"):  # at once, not after a read timeout
                await resp.read()
            await asyncio.wait_for(gone.wait(), 5)
            assert p.idle_count() == 0 and len(srv.peers) == 2

    run(scenario)


def test_cancelled_request_closes_its_connection(run: Callable[[Scenario], None]) -> None:
    async def scenario() -> None:
        srv = Server()
        entered = asyncio.Event()

        async def hang(req: web.Request) -> web.StreamResponse:
            entered.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.sleep(2)
            return web.Response(text="late")

        async def ok(req: web.Request) -> web.StreamResponse:
            return web.Response(text="ok")

        srv.route("GET", "/hang", hang)
        srv.route("GET", "/ok", ok)
        async with srv.running(), pool(limit_per_host=1) as p:
            task = asyncio.ensure_future(p.request("GET", srv.url / "hang", {}, None, **T))
            await asyncio.wait_for(entered.wait(), 5)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            resp = await p.request("GET", srv.url / "ok", {}, None, connect_timeout=1, read_timeout=5)
            assert await resp.read() == b"ok"  # the slot was freed, on a new connection
            assert len(srv.peers) == 2

    run(scenario)


def test_pool_close(run: Callable[[Scenario], None]) -> None:
    async def scenario() -> None:
        srv = Server()

        async def ok(req: web.Request) -> web.StreamResponse:
            return web.Response(text="ok")

        srv.route("GET", "/", ok)
        async with srv.running():
            p = h1.Pool()
            resps = await asyncio.gather(*(p.request("GET", srv.url, {}, None, **T) for _ in range(3)))
            assert [await r.read() for r in resps] == [b"ok"] * 3
            assert p.open_count() == 3
            await p.close()
            assert p.open_count() == 0 and p.closed
            with pytest.raises(h1.H1Error, match="closed"):
                await p.request("GET", srv.url, {}, None, **T)

    run(scenario)


# ------------------------------------------------------------------------------------------------ requests refused


@pytest.mark.parametrize(
    ("method", "url", "headers"),
    [
        ("GET", "http://127.0.0.1:1/", {"X-A": "v\r\nInjected: 1"}),
        ("GET", "http://127.0.0.1:1/", {"X-A\n": "v"}),
        ("GET", "http://127.0.0.1:1/", {"host": "elsewhere"}),
        ("GET", "http://127.0.0.1:1/", {"Content-Length": "3"}),
        ("GET", "http://127.0.0.1:1/", {"Transfer-Encoding": "chunked"}),
        ("GET", "https://127.0.0.1:1/", {}),
        ("HEAD", "http://127.0.0.1:1/", {}),
    ],
)
def test_requests_refused_before_sending(
    run: Callable[[Scenario], None], method: str, url: str, headers: dict[str, str]
) -> None:
    async def scenario() -> None:
        async with pool() as p:
            with pytest.raises(ValueError):
                await p.request(method, yarl.URL(url), headers, None, **T)
            assert p.open_count() == 0

    run(scenario)
