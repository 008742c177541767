"""Many HTTP exchanges over one WebSocket, each with its own flow control.

The gateway opens a *stream* per exchange with an upstream behind an agent; the agent answers on it. Frames are
binary WebSocket messages: a 5-byte header (stream id, big-endian u32; frame type, u8) and a payload.

========  =======================================================================================
``OPEN``  gateway → agent: the request head, JSON ``{"server", "method", "headers"}``
``HEAD``  agent → gateway: the response head, JSON ``{"status", "headers"}``
``DATA``  either way: body bytes (at most ``MAX_FRAME``), counted against the receiver's window
``END``   either way: no more DATA from this side
``RESET`` either way: the exchange is over, abnormally (JSON ``{"reason"}``): cancel, timeout, a local error
``WINDOW`` either way: the receiver consumed N more bytes (u32): the sender may send that many more
========  =======================================================================================

A small exchange needs no more than one frame each way: ``OPEN`` or ``HEAD`` with the ``FIN`` bit carries the head
(length-prefixed JSON), the whole body (at most ``MAX_FRAME``) and the end of that side.

Flow control is per stream, credit-based as in HTTP/2: a sender may have at most ``WINDOW`` unacknowledged bytes in
flight on a stream; the receiver buffers them without ever blocking the connection's read loop and grants credit
as its consumer reads. So a slow consumer holds up only its own stream, never the connection or the others; the
memory a connection can pin is bounded by streams times the window. Text WebSocket messages carry control JSON
(``hello``, ``welcome``, ``stats``) for the layer above; liveness is the WebSocket's own ping/pong.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import orjson

log = logging.getLogger("portcullis.tunnel")

OPEN, HEAD, DATA, END, RESET, WINDOW = 1, 2, 3, 4, 5, 6
FIN = 0x80  # on OPEN or HEAD: the frame also carries the whole body (after the head) and ends this side
HEADER = struct.Struct(">IB")
CREDIT = struct.Struct(">I")
HEAD_LEN = struct.Struct(">I")
WINDOW_SIZE = 256 * 1024  # bytes a sender may have unacknowledged on one stream
MAX_FRAME = 64 * 1024  # DATA payload per frame
MAX_STREAMS = 4096  # streams open on one connection at once


class TunnelError(Exception):
    """The stream or the whole tunnel failed (reset by the peer, connection lost, protocol violation)."""


class Socket(Protocol):
    """What the mux needs of a WebSocket (aiohttp's client and server sockets both have it)."""

    async def send_bytes(self, data: bytes) -> None: ...

    async def send_str(self, data: str) -> None: ...

    async def close(self, *, code: int = ..., message: bytes = ...) -> bool: ...


class Stream:
    """One exchange. Read with :meth:`read` (``b""`` at the end), write with :meth:`write` then :meth:`end`."""

    __slots__ = (
        "_consumed",
        "_credit",
        "_credit_wait",
        "_inbox",
        "_inbox_bytes",
        "_waiter",
        "ended",
        "head",
        "head_waiter",
        "id",
        "local_ended",
        "mux",
        "on_reset",
        "reset_event",
        "reset_reason",
    )

    def __init__(self, mux: Mux, stream_id: int) -> None:
        self.mux = mux
        self.id = stream_id
        self.head: dict[str, Any] | None = None
        self.head_waiter: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._inbox: deque[bytes] = deque()
        self._inbox_bytes = 0
        self._waiter: asyncio.Future[None] | None = None
        self._credit = WINDOW_SIZE
        self._credit_wait: asyncio.Future[None] | None = None
        self._consumed = 0
        self.ended = False  # the peer sent END
        self.local_ended = False
        self.reset_reason: str | None = None
        self.reset_event = asyncio.Event()  # set when the stream is reset (by either side) or the tunnel drops
        self.on_reset: Callable[[], None] | None = None  # called once, then (the agent: cancel the local request)

    # --- receiving (called by the mux's read loop; never blocks) ---

    def _on_data(self, data: bytes) -> None:
        if self._inbox_bytes + len(data) > WINDOW_SIZE:
            self.mux._reset(self, "flow control: the peer sent beyond its window")
            return
        self._inbox.append(data)
        self._inbox_bytes += len(data)
        self._wake()

    def _on_end(self) -> None:
        self.ended = True
        self._wake()

    def _on_reset(self, reason: str) -> None:
        if self.reset_reason is None:
            self.reset_reason = reason
        self.reset_event.set()
        if self.on_reset is not None:
            cb, self.on_reset = self.on_reset, None
            cb()
        if not self.head_waiter.done():
            self.head_waiter.set_exception(TunnelError(reason))
            self.head_waiter.exception()  # retrieved: nobody may wait for a head that will never come
        self._wake()
        if self._credit_wait is not None and not self._credit_wait.done():
            self._credit_wait.set_result(None)

    def _on_window(self, n: int) -> None:
        self._credit += n
        if self._credit_wait is not None and not self._credit_wait.done():
            self._credit_wait.set_result(None)

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    # --- the consumer side ---

    async def read(self) -> bytes:
        """The next chunk of the peer's body; ``b""`` once it ended. Raises TunnelError if the stream was reset."""
        while not self._inbox or self.reset_reason is not None:
            if self.reset_reason is not None:  # what was buffered is part of a failed exchange: not handed out
                raise TunnelError(self.reset_reason)
            if self.ended:
                self.mux._maybe_forget(self)
                return b""
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
            self._waiter = None
        chunk = self._inbox.popleft()
        self._inbox_bytes -= len(chunk)
        self._consumed += len(chunk)
        if self._consumed >= WINDOW_SIZE // 2 and self.reset_reason is None and not self.ended:
            n, self._consumed = self._consumed, 0
            await self.mux._send(self.id, WINDOW, CREDIT.pack(n))
        return chunk

    async def read_all(self, limit: int) -> bytes:
        parts: list[bytes] = []
        size = 0
        while chunk := await self.read():
            size += len(chunk)
            if size > limit:
                await self.reset("body larger than the limit")
                raise TunnelError("body larger than the limit")
            parts.append(chunk)
        return b"".join(parts)

    # --- the producer side ---

    async def send_head(self, head: dict[str, Any], kind: int = HEAD) -> None:
        await self.mux._send(self.id, kind, orjson.dumps(head))

    async def send_whole(self, head: dict[str, Any], body: bytes, kind: int = HEAD) -> None:
        """Head, body (at most ``MAX_FRAME``) and end in one frame."""
        assert len(body) <= MAX_FRAME and not self.local_ended
        h = orjson.dumps(head)
        self._credit -= len(body)
        self.local_ended = True
        await self.mux._send(self.id, kind | FIN, HEAD_LEN.pack(len(h)) + h + body)
        self.mux._maybe_forget(self)

    async def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if self.reset_reason is not None:
                raise TunnelError(self.reset_reason)
            if self._credit <= 0:
                self._credit_wait = asyncio.get_running_loop().create_future()
                await self._credit_wait
                self._credit_wait = None
                continue
            n = min(len(view), self._credit, MAX_FRAME)
            self._credit -= n
            await self.mux._send(self.id, DATA, bytes(view[:n]))
            view = view[n:]

    async def end(self) -> None:
        if not self.local_ended and self.reset_reason is None:
            self.local_ended = True
            await self.mux._send(self.id, END, b"")
            self.mux._maybe_forget(self)

    async def reset(self, reason: str) -> None:
        """Abandon the exchange (both ways); the peer is told."""
        if self.reset_reason is not None:
            return
        self.on_reset = None  # our own decision: nothing of ours to cancel
        self._on_reset(reason)
        with contextlib.suppress(Exception):
            await self.mux._send(self.id, RESET, orjson.dumps({"reason": reason}))
        self.mux._forget(self)


Opened = Callable[[Stream, dict[str, Any]], Awaitable[None]]


class Mux:
    """One side of a tunnel connection. ``on_open`` (the agent's side) is run as a task for each stream the peer
    opens; ``on_control`` receives the peer's text messages."""

    def __init__(
        self,
        ws: Socket,
        on_open: Opened | None = None,
        on_control: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.ws = ws
        self._on_open = on_open
        self._on_control = on_control
        self.streams: dict[int, Stream] = {}
        self._next_id = 1
        self._send_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self.closed: str | None = None
        self.bytes_in = 0
        self.bytes_out = 0
        self.opened = 0

    def open(self) -> Stream:
        """A new stream (the gateway's side). Send its head with ``send_head(head, OPEN)``."""
        if self.closed is not None:
            raise TunnelError(f"tunnel closed: {self.closed}")
        if len(self.streams) >= MAX_STREAMS:
            raise TunnelError("too many streams on this tunnel")
        sid = self._next_id
        self._next_id = (self._next_id + 1) & 0xFFFFFFFF or 1
        s = self.streams[sid] = Stream(self, sid)
        self.opened += 1
        return s

    async def _send(self, sid: int, kind: int, payload: bytes) -> None:
        if self.closed is not None:
            raise TunnelError(f"tunnel closed: {self.closed}")
        frame = HEADER.pack(sid, kind) + payload
        async with self._send_lock:
            await self.ws.send_bytes(frame)
        self.bytes_out += len(frame)

    async def control(self, msg: dict[str, Any]) -> None:
        async with self._send_lock:
            await self.ws.send_str(orjson.dumps(msg).decode())

    def _forget(self, s: Stream) -> None:
        if self.streams.get(s.id) is s:
            del self.streams[s.id]

    def _maybe_forget(self, s: Stream) -> None:
        """Both sides ended and everything was read: the stream's id may go."""
        if s.local_ended and s.ended and not s._inbox:
            self._forget(s)

    def _reset(self, s: Stream, reason: str) -> None:
        task = asyncio.get_running_loop().create_task(s.reset(reason))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def feed(self, data: bytes) -> None:
        """One binary message from the peer (called by the read loop; never blocks)."""
        self.bytes_in += len(data)
        if len(data) < HEADER.size:
            raise TunnelError("frame shorter than its header")
        sid, kind = HEADER.unpack_from(data)
        payload = data[HEADER.size :]
        s = self.streams.get(sid)
        fin = kind & FIN
        kind &= ~FIN
        body = b""
        if fin:
            if kind not in (OPEN, HEAD) or len(payload) < HEAD_LEN.size:
                raise TunnelError("FIN only goes with OPEN or HEAD")
            (n,) = HEAD_LEN.unpack_from(payload)
            payload, body = payload[HEAD_LEN.size : HEAD_LEN.size + n], payload[HEAD_LEN.size + n :]
        if kind == OPEN:
            if self._on_open is None or s is not None:
                raise TunnelError(f"unexpected OPEN of stream {sid}")
            if len(self.streams) >= MAX_STREAMS:
                self._refuse(sid, "too many streams on this tunnel")
                return
            s = self.streams[sid] = Stream(self, sid)
            head = orjson.loads(payload)
            s.head = head
            if fin:
                if body:
                    s._on_data(body)
                s._on_end()
            task = asyncio.get_running_loop().create_task(self._serve(s, head))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return
        if s is None:
            return  # a stream we already reset or finished: late frames are dropped
        if kind == DATA:
            s._on_data(payload)
        elif kind == HEAD:
            s.head = orjson.loads(payload)
            if fin:
                if body:
                    s._on_data(body)
                s._on_end()
            if not s.head_waiter.done():
                s.head_waiter.set_result(s.head)
            if fin:
                self._maybe_forget(s)
        elif kind == END:
            s._on_end()
            self._maybe_forget(s)
        elif kind == RESET:
            reason = orjson.loads(payload).get("reason", "reset by the peer") if payload else "reset by the peer"
            s._on_reset(str(reason))
            self._forget(s)
        elif kind == WINDOW:
            s._on_window(CREDIT.unpack(payload)[0])
        else:
            raise TunnelError(f"unknown frame type {kind}")

    def _refuse(self, sid: int, reason: str) -> None:
        async def refuse() -> None:
            with contextlib.suppress(Exception):
                await self._send(sid, RESET, orjson.dumps({"reason": reason}))

        task = asyncio.get_running_loop().create_task(refuse())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, s: Stream, head: dict[str, Any]) -> None:
        assert self._on_open is not None
        try:
            await self._on_open(s, head)
        except TunnelError:
            pass
        except Exception as exc:  # the handler failed: the peer hears of it, the tunnel goes on
            log.warning("tunnel stream %d failed: %s", s.id, type(exc).__name__, exc_info=True)
            await s.reset(f"agent error ({type(exc).__name__})")

    def control_message(self, text: str) -> None:
        if self._on_control is not None:
            self._on_control(orjson.loads(text))

    def close(self, reason: str) -> None:
        """The connection is gone: every stream fails now (callers get a clear error, nobody hangs)."""
        if self.closed is None:
            self.closed = reason
        for s in list(self.streams.values()):
            s._on_reset(f"tunnel lost: {reason}")
        self.streams.clear()
        for t in list(self._tasks):
            t.cancel()
