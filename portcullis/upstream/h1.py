"""A minimal HTTP/1.1 keep-alive client for upstream MCP calls: plain ``http://``, ``asyncio.Protocol`` + llhttp.

Made for exactly what :mod:`portcullis.upstream.http` does with aiohttp's ``ClientSession``, at a fraction of the
CPU (``bench/h1_bench.py``): send a POST, GET or DELETE with a small header set and a ``bytes`` body; read the
status and a few headers; read the body whole (bounded), or chunk by chunk as it arrives (SSE), never buffering more
than :data:`HIGH_WATER` bytes ahead of a streaming reader. The response is parsed by ``httptools`` (the llhttp
bindings uvicorn uses), with the leniencies aiohttp's own C parser enables, so an upstream that works with aiohttp
works here.

Connections are kept alive and reused per ``(host, port)``, at most ``limit_per_host`` at a time (0: no bound), and
closed after ``keepalive_timeout`` idle seconds. A connection goes back to the pool only once its response has been
received completely and the server allows keep-alive; a response released or closed mid-body closes its connection,
so a connection is never reused mid-body. A request that fails because a reused connection was closed by the server
before any byte of the response arrived is retried once on a new connection when its method is idempotent (GET,
DELETE), as aiohttp does (RFC 9112 §9.3.1); a POST never is.

Timeouts: ``connect_timeout`` bounds getting a connection (waiting for the pool's bound plus the TCP connect);
``read_timeout`` bounds every wait for bytes from the server (the response head, then each wait for more body), like
aiohttp's ``sock_read``. Both raise the builtin :class:`TimeoutError`; every other failure raises an :class:`H1Error`.

Not handled (callers keep aiohttp for these): TLS (``https://``), proxies, ``Expect: 100-continue`` (interim 1xx
responses are skipped), HEAD, content decoding (no ``Accept-Encoding`` is sent; a ``Content-Encoding`` is passed
through untouched), cookies, redirects, authentication, request bodies other than ``bytes``, trailers (ignored),
upgrades (101 is an error).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Final, cast, overload

import httptools
import yarl

from portcullis.upstream.netguard import NetGuard

HIGH_WATER: Final = 256 * 1024  # body bytes buffered ahead of a streaming reader before reading pauses
MAX_HEAD: Final = 64 * 1024  # bytes the server may send before the end of the response head
_WRITE_JOIN: Final = 64 * 1024  # bodies up to this size go out in one write with the head
IDEMPOTENT: Final = frozenset({"GET", "DELETE", "PUT", "OPTIONS"})
_RESERVED: Final = frozenset({"host", "content-length", "transfer-encoding", "connection"})

Key = tuple[str, int]


class H1Error(Exception):
    """The exchange failed (a timeout raises the builtin ``TimeoutError`` instead)."""


class ConnectError(H1Error):
    """No TCP connection to the server."""


class ServerDisconnected(H1Error):
    """The server closed the connection before the response was complete."""


class BadResponse(H1Error):
    """The server sent something that is not a valid HTTP/1.x response (or one this client does not speak)."""


class TooLarge(H1Error):
    """The body is larger than the limit given to :meth:`Response.read` (the connection was closed)."""


class Headers:
    """Response headers, looked up case-insensitively; a repeated header's values are joined with ``", "``."""

    __slots__ = ("_d",)

    def __init__(self) -> None:
        self._d: dict[str, str] = {}  # lower-cased name -> value

    @overload
    def get(self, name: str) -> str | None: ...

    @overload
    def get(self, name: str, default: str) -> str: ...

    def get(self, name: str, default: str | None = None) -> str | None:
        return self._d.get(name.lower(), default)

    def __getitem__(self, name: str) -> str:
        return self._d[name.lower()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._d

    def __len__(self) -> int:
        return len(self._d)

    def items(self) -> Iterator[tuple[str, str]]:
        """``(lower-cased name, value)`` pairs."""
        return iter(self._d.items())

    def __repr__(self) -> str:
        return f"Headers({self._d!r})"


def _expire(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_exception(TimeoutError("no data from the upstream within the read timeout"))


class Response:
    """One response: ``status`` and ``headers`` are set; the body is read with :meth:`read` or :meth:`iter_chunks`.

    Call :meth:`release` (or :meth:`close`) when done unless the body was read to its end; a connection still
    mid-body is closed, never reused. One reader at a time.
    """

    __slots__ = (
        "_buffered",
        "_chunks",
        "_conn",
        "_done",
        "_exc",
        "_loop",
        "_read_timeout",
        "_reading_all",
        "_waiter",
        "headers",
        "status",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop, read_timeout: float) -> None:
        self.status = 0  # set once the final (non-1xx) response head has arrived
        self.headers = Headers()
        self._loop = loop
        self._read_timeout = read_timeout
        self._conn: _Conn | None = None  # attached until the body is complete (or the exchange fails)
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._done = False  # the whole body is in _chunks (or was handed out)
        self._exc: H1Error | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._reading_all = False

    @property
    def content_length(self) -> int | None:
        v = self.headers._d.get("content-length")
        return int(v) if v is not None and v.isdigit() else None

    @property
    def complete(self) -> bool:
        """The whole body has arrived (the connection is back in the pool or closed)."""
        return self._done

    async def read(self, limit: int | None = None) -> bytes:
        """The whole body; :class:`TooLarge` (and the connection closed) if it is longer than ``limit`` bytes."""
        if limit is not None:
            n = self.content_length
            if n is not None and n > limit:
                self.close()
                raise TooLarge(f"response body of {n} bytes is over the limit of {limit}")
        self._reading_all = True
        conn = self._conn
        if conn is not None and conn.paused:
            conn.resume()
        while not self._done:
            if self._exc is not None:
                raise self._exc
            if limit is not None and self._buffered > limit:
                self.close()
                raise TooLarge(f"response body is over the limit of {limit} bytes")
            await self._wait()
        if limit is not None and self._buffered > limit:
            raise TooLarge(f"response body of {self._buffered} bytes is over the limit of {limit}")
        chunks = self._chunks
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self._buffered = 0
        return data

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives: each item is everything received since the previous one (never empty)."""
        chunks = self._chunks
        while True:
            if chunks:
                data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                chunks.clear()
                self._buffered = 0
                conn = self._conn
                if conn is not None and conn.paused:
                    conn.resume()
                yield data
            elif self._done:
                return
            elif self._exc is not None:
                raise self._exc
            else:
                await self._wait()

    def release(self) -> None:
        """Done with this response. A connection still mid-body is closed; a complete one is already pooled."""
        conn = self._conn
        if conn is not None:
            self._conn = None
            conn.resp = None
            conn.drop()
            if self._exc is None:
                self._exc = H1Error("the response was released before its end")

    def close(self) -> None:
        """Drop the connection if the body is still arriving (for 2026-07-28 that cancels the call)."""
        self.release()

    async def _wait(self) -> None:
        loop = self._loop
        fut: asyncio.Future[None] = loop.create_future()
        self._waiter = fut
        timer = loop.call_later(self._read_timeout, _expire, fut)
        try:
            await fut
        except BaseException:  # timed out or cancelled mid-response: the connection cannot be reused
            self.release()
            raise
        finally:
            timer.cancel()
            self._waiter = None

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)


class _Conn(asyncio.Protocol):
    """One TCP connection; parses the responses to the requests written on it, one at a time."""

    __slots__ = (
        "_interim",
        "_keep_alive",
        "_pool",
        "_until_eof",
        "closed",
        "got_bytes",
        "head_bytes",
        "header_bytes",
        "idle",
        "idle_since",
        "key",
        "parser",
        "paused",
        "resp",
        "reused",
        "transport",
    )

    def __init__(self, pool: Pool, key: Key) -> None:
        self._pool = pool
        self.key = key
        self.transport: asyncio.Transport
        self.parser = httptools.HttpResponseParser(self)
        # the leniencies aiohttp's C parser enables outside debug mode, so the same upstreams parse the same way
        self.parser.set_dangerous_leniencies(
            lenient_headers=True, lenient_optional_cr_before_lf=True, lenient_spaces_after_chunk_size=True
        )
        self.resp: Response | None = None
        self.closed = False
        self.idle = False
        self.idle_since = 0.0
        self.reused = False
        self.paused = False
        self.got_bytes = False
        self.head_bytes = 0  # bytes received while the head is unfinished
        self.header_bytes = 0  # bytes of header names and values
        self._interim = False
        self._until_eof = False
        self._keep_alive = False

    # --- transport side ---

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        resp = self.resp
        if resp is None:  # bytes nobody asked for: the connection's state is unknown, never reuse it
            self.drop()
            return
        self.got_bytes = True
        try:
            self.parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            if resp._done:  # bytes after a complete response: keep the response, drop the connection
                self._detach(resp, False)
            else:
                ctx = exc.__context__
                self._fail(ctx if isinstance(ctx, H1Error) else BadResponse(f"invalid HTTP response: {exc}"))
            return
        if resp._done:
            self._detach(resp, self._keep_alive)
        elif not resp.status:  # all bytes so far belong to an unfinished head
            self.head_bytes += len(data)
            if self.head_bytes > MAX_HEAD:
                self._fail(BadResponse(f"response head larger than {MAX_HEAD} bytes"))

    def eof_received(self) -> bool | None:
        return None  # close; connection_lost decides whether the response is complete

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        resp = self.resp
        if resp is not None:
            self.resp = None
            resp._conn = None
            if not resp._done:
                if resp.status and self._until_eof and exc is None:
                    resp._done = True  # a body delimited by the end of the connection
                else:
                    where = "mid-body" if resp.status else "before the response head"
                    why = f": {exc}" if exc is not None else ""
                    resp._exc = ServerDisconnected(f"the upstream closed the connection {where}{why}")
                resp._wake()
        self._pool._lost(self)

    def pause(self) -> None:
        if not self.paused and not self.closed:
            self.paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.paused:
            self.paused = False
            if not self.closed:
                self.transport.resume_reading()

    def drop(self) -> None:
        self.resp = None
        if not self.transport.is_closing():
            self.transport.close()

    def start(self, resp: Response) -> None:
        self.resp = resp
        resp._conn = self
        self.got_bytes = False
        self.head_bytes = 0
        self.header_bytes = 0
        self._interim = False
        self._until_eof = False
        self._keep_alive = False

    def _detach(self, resp: Response, reuse: bool) -> None:
        self.resp = None
        resp._conn = None
        if reuse and not self.closed:
            self.resume()
            self._pool._put(self)
        else:
            self.drop()

    def _fail(self, exc: H1Error) -> None:
        resp = self.resp
        if resp is not None:
            resp._conn = None
            resp._exc = exc
            resp._wake()
        self.drop()

    # --- parser callbacks (httptools) ---

    def on_message_begin(self) -> None:
        resp = self.resp
        if resp is None or resp._done:
            raise BadResponse("data after the end of the response")

    def on_header(self, name: bytes, value: bytes) -> None:
        resp = self.resp
        if resp is None or resp.status:  # trailers are ignored
            return
        self.header_bytes += len(name) + len(value)
        if self.header_bytes > MAX_HEAD:
            raise BadResponse(f"response head larger than {MAX_HEAD} bytes")
        d = resp.headers._d
        k = name.decode("latin-1").lower()
        v = value.decode("utf-8", "surrogateescape")
        old = d.get(k)
        d[k] = v if old is None else f"{old}, {v}"

    def on_headers_complete(self) -> None:
        resp = self.resp
        if resp is None:
            return
        status = self.parser.get_status_code()
        d = resp.headers._d
        if status < 200:
            if status == 101:
                raise BadResponse("the upstream switched protocols (101)")
            self._interim = True  # 100 Continue, 103 Early Hints: wait for the final response
            d.clear()
            return
        te = d.get("transfer-encoding")
        self._until_eof = (
            "content-length" not in d
            and (te is None or not te.lower().endswith("chunked"))
            and status not in (204, 304)
        )
        resp.status = status
        resp._wake()

    def on_body(self, body: bytes) -> None:
        resp = self.resp
        if resp is None:
            return
        resp._chunks.append(body)
        resp._buffered += len(body)
        if resp._buffered > HIGH_WATER and not resp._reading_all:
            self.pause()
        resp._wake()

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        resp = self.resp
        if resp is None:
            return
        self._keep_alive = self.parser.should_keep_alive()
        resp._done = True
        resp._wake()


def _request_head(method: str, url: yarl.URL, headers: Mapping[str, str], body: bytes | None) -> bytes:
    parts = [f"{method} {url.raw_path_qs} HTTP/1.1\r\nHost: {url.host_port_subcomponent}\r\n"]
    for k, v in headers.items():
        if k.lower() in _RESERVED:
            raise ValueError(f"header {k!r} is set by the client itself")
        parts.append(f"{k}: {v}\r\n")
    lines = len(headers) + 3
    if body is not None:
        parts.append(f"Content-Length: {len(body)}\r\n")
        lines += 1
    parts.append("\r\n")
    s = "".join(parts)
    if s.count("\n") != lines or s.count("\r") != lines:  # one C-level scan instead of a check per header
        raise ValueError("CR or LF in the request line or a header")
    return s.encode("utf-8", "surrogateescape")


class Pool:
    """Keep-alive connections per ``(host, port)``; ``limit_per_host`` 0 means unbounded."""

    def __init__(
        self, *, limit_per_host: int = 0, keepalive_timeout: float = 60.0, guard: NetGuard | None = None
    ) -> None:
        self._guard = guard  # where names may lead (upstream/netguard.py); None: anywhere (the agent's own pool)
        self._limit = limit_per_host
        self._keepalive = keepalive_timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._idle: dict[Key, list[_Conn]] = {}  # most recently used last
        self._count: dict[Key, int] = {}  # connections open or being opened
        self._waiters: dict[Key, deque[asyncio.Future[_Conn | None]]] = {}
        self._all: set[_Conn] = set()
        self._cleanup: asyncio.TimerHandle | None = None
        self._closed = False
        self._drained: asyncio.Future[None] | None = None

    @property
    def closed(self) -> bool:
        return self._closed

    def idle_count(self, url: yarl.URL | None = None) -> int:
        """Idle pooled connections (to ``url``'s host and port, or in all)."""
        if url is None:
            return sum(len(v) for v in self._idle.values())
        return len(self._idle.get((url.raw_host or "", url.port or 80), ()))

    def open_count(self) -> int:
        """Connections open (idle or in use)."""
        return len(self._all)

    async def request(
        self,
        method: str,
        url: yarl.URL,
        headers: Mapping[str, str],
        body: bytes | None = None,
        *,
        connect_timeout: float,
        read_timeout: float,
    ) -> Response:
        """Send one request and wait for the response head; the body is the caller's to read or release."""
        if self._closed:
            raise H1Error("the connection pool is closed")
        if url.scheme != "http" or not url.raw_host:
            raise ValueError(f"h1 speaks plain http:// only, not {url.scheme}://")
        if method == "HEAD":
            raise ValueError("HEAD is not supported")
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        key = (url.raw_host, url.port or 80)
        head = _request_head(method, url, headers, body)
        # one write for the head and a small body; a large body goes out without being copied
        data = head if not body else head + body if len(body) <= _WRITE_JOIN else None
        retry = method in IDEMPOTENT
        while True:
            conn = await self._acquire(key, connect_timeout)
            resp = Response(loop, read_timeout)
            conn.start(resp)
            if data is not None:
                conn.transport.write(data)
            else:
                assert body is not None
                conn.transport.writelines((head, body))
            try:
                while not resp.status:
                    if resp._exc is not None:
                        raise resp._exc
                    await resp._wait()
            except ServerDisconnected:
                if retry and conn.reused and not conn.got_bytes:
                    retry = False
                    continue
                raise
            return resp

    async def close(self) -> None:
        """Close every connection (responses still arriving fail with :class:`ServerDisconnected`)."""
        self._closed = True
        if self._cleanup is not None:
            self._cleanup.cancel()
            self._cleanup = None
        for q in self._waiters.values():
            for w in q:
                if not w.done():
                    w.set_exception(H1Error("the connection pool is closed"))
        self._waiters.clear()
        for idle in self._idle.values():
            for c in idle:
                c.idle = False
        self._idle.clear()
        for c in list(self._all):
            c.transport.close()
        if self._all and self._loop is not None:
            self._drained = self._loop.create_future()
            await self._drained

    # --- internals ---

    async def _acquire(self, key: Key, connect_timeout: float) -> _Conn:
        idle = self._idle.get(key)
        if idle:
            assert self._loop is not None
            stale = self._loop.time() - self._keepalive
            while idle:
                conn = idle.pop()
                conn.idle = False
                if conn.closed or conn.transport.is_closing():
                    continue
                if conn.idle_since < stale:
                    conn.drop()
                    continue
                conn.reused = True
                return conn
        async with asyncio.timeout(connect_timeout):
            return await self._connect_or_wait(key)

    async def _connect_or_wait(self, key: Key) -> _Conn:
        loop = self._loop
        assert loop is not None
        while True:
            n = self._count.get(key, 0)
            if self._limit <= 0 or n < self._limit:
                self._count[key] = n + 1
                try:
                    host = key[0]
                    if self._guard is not None:  # connect to an address the guard allowed, not to the name again
                        host = (await self._guard.resolve(key[0], key[1]))[0][1]
                    _, conn = await loop.create_connection(lambda: _Conn(self, key), host, key[1])
                except BaseException as exc:
                    self._count[key] -= 1
                    self._wake_waiter(key, None)
                    if isinstance(exc, OSError) and not isinstance(exc, TimeoutError):
                        raise ConnectError(f"cannot connect to {key[0]}:{key[1]}: {exc}") from exc
                    raise
                if conn.closed:  # lost already: connection_lost did the accounting
                    raise ServerDisconnected(f"{key[0]}:{key[1]} closed the connection at once")
                self._all.add(conn)
                if self._closed:
                    conn.drop()
                    raise H1Error("the connection pool is closed")
                return conn
            fut: asyncio.Future[_Conn | None] = loop.create_future()
            q = self._waiters.get(key)
            if q is None:
                q = self._waiters[key] = deque()
            q.append(fut)
            try:
                got = await fut
            except BaseException:
                if fut.done() and not fut.cancelled() and fut.exception() is None:
                    given = fut.result()
                    if given is not None:  # a connection was handed over as we gave up: pass it on
                        self._put(given)
                    else:  # so was a free slot
                        self._wake_waiter(key, None)
                else:
                    with contextlib.suppress(ValueError):
                        q.remove(fut)
                raise
            if got is not None:
                if got.closed or got.transport.is_closing():
                    continue
                got.reused = True
                return got

    def _wake_waiter(self, key: Key, conn: _Conn | None) -> bool:
        q = self._waiters.get(key)
        while q:
            w = q.popleft()
            if not w.done():
                w.set_result(conn)
                return True
        return False

    def _put(self, conn: _Conn) -> None:
        """A connection whose response is complete and that the server keeps alive."""
        if self._closed:
            conn.drop()
            return
        if self._waiters and self._wake_waiter(conn.key, conn):
            return
        loop = self._loop
        assert loop is not None
        conn.idle = True
        conn.idle_since = loop.time()
        idle = self._idle.get(conn.key)
        if idle is None:
            self._idle[conn.key] = [conn]
        else:
            idle.append(conn)
        if self._cleanup is None:
            self._cleanup = loop.call_later(self._keepalive, self._expire_idle)

    def _expire_idle(self) -> None:
        self._cleanup = None
        loop = self._loop
        assert loop is not None
        stale = loop.time() - self._keepalive
        remaining = 0
        for idle in self._idle.values():
            for c in [c for c in idle if c.idle_since <= stale]:
                idle.remove(c)
                c.idle = False
                c.drop()
            remaining += len(idle)
        if remaining:
            self._cleanup = loop.call_later(self._keepalive / 2, self._expire_idle)

    def _lost(self, conn: _Conn) -> None:
        self._all.discard(conn)
        key = conn.key
        if conn.idle:
            conn.idle = False
            idle = self._idle.get(key)
            if idle is not None and conn in idle:
                idle.remove(conn)
        self._count[key] -= 1
        if self._waiters:
            self._wake_waiter(key, None)
        if self._drained is not None and not self._all and not self._drained.done():
            self._drained.set_result(None)
