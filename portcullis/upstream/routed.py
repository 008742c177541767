"""Upstreams that carry all of a session's messages on one channel (a stdio child, a legacy HTTP+SSE connection).

Messages arriving on the channel are routed to the stream of the request they belong to: the response by id,
progress by progress token, anything else (logging, server→client requests) to the newest request still open, or
to the standalone stream. A subclass provides the channel: ``start``, ``_write``, ``close``, and calls ``_route``
for each message and ``_die`` when the channel ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import AsyncIterator

import orjson

from portcullis import errors
from portcullis.config.model import ServerConfig
from portcullis.tasks import spawn
from portcullis.wire.jsonrpc import Kind, Message, MsgId

log = logging.getLogger("portcullis.upstream")

_END = object()
STOPPED = "was stopped by the gateway"


class RoutedReply:
    """Messages for one forwarded request, fed by the channel's reader; bounded by an idle limit."""

    __slots__ = ("_q", "idle_limit", "name", "progress_token", "request_id", "session_id", "status", "streaming")

    def __init__(self, request_id: MsgId, progress_token: object, idle_limit: float, name: str) -> None:
        self._q: asyncio.Queue[object] = asyncio.Queue()
        self.request_id = request_id
        self.progress_token = progress_token
        self.idle_limit = idle_limit
        self.name = name
        self.status = 200
        self.streaming = True
        self.session_id: str | None = None

    def put(self, item: object) -> None:
        self._q.put_nowait(item)

    def stop(self) -> None:
        """End the iteration: nobody waits for this request any more."""
        self._q.put_nowait(_END)

    async def __aiter__(self) -> AsyncIterator[Message]:
        while True:
            try:
                item = await asyncio.wait_for(self._q.get(), self.idle_limit)
            except TimeoutError:
                raise errors.UpstreamError(
                    errors.UPSTREAM_TIMEOUT, f"upstream {self.name!r} sent nothing for {self.idle_limit:g} s"
                ) from None
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            assert isinstance(item, Message)
            yield item
            if item.kind.is_response and item.id == self.request_id:
                return

    async def aclose(self, cancel: bool = False) -> None:
        return None


class Done:
    """A reply for a message that gets no response (a notification, or the client's answer to the server)."""

    status = 202
    streaming = False
    session_id: str | None = None

    async def __aiter__(self) -> AsyncIterator[Message]:
        return
        yield  # pragma: no cover

    async def aclose(self, cancel: bool = False) -> None:
        return None


class RestartGate:
    """Backoff for a server whose sessions keep dying before they finish ``initialize`` (a crash loop).

    Each failure doubles the wait (0.5 s, 1 s, 2 s ... up to ``restart_backoff_max``, with jitter); during the wait a
    new session is refused at once with an error that says when to retry. One successful start resets it.
    """

    def __init__(self, cap: float) -> None:
        self.cap = cap
        self.failures = 0
        self.until = 0.0

    def check(self, name: str) -> None:
        wait = self.until - time.monotonic()
        if wait > 0:
            raise errors.UpstreamError(
                errors.UPSTREAM_UNAVAILABLE,
                f"upstream {name!r} keeps exiting before it starts; next start allowed in {wait:.1f} s",
            )

    def failed(self) -> None:
        self.failures += 1
        delay = min(self.cap, 0.5 * 2 ** (self.failures - 1))
        self.until = time.monotonic() + delay * (0.75 + random.random() / 4)

    def ok(self) -> None:
        self.failures = 0
        self.until = 0.0


class RoutedSession:
    """One upstream session on one channel. Subclasses provide the channel."""

    what = "channel"  # words for errors: "process", "connection"

    def __init__(self, name: str, cfg: ServerConfig, gate: RestartGate | None = None) -> None:
        self.name = name
        self.cfg = cfg
        self.gate = gate
        self.started = False
        self.dead: str | None = None
        self._pending: dict[object, RoutedReply] = {}
        self._order: deque[RoutedReply] = deque()
        self._listen: asyncio.Queue[object] = asyncio.Queue(maxsize=1024)
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        raise NotImplementedError

    async def _write(self, raw: bytes) -> None:
        """Send one message; raise UpstreamError if the channel is gone."""
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    def _gone(self) -> errors.UpstreamError:
        return errors.UpstreamError(errors.UPSTREAM_UNAVAILABLE, f"upstream {self.name!r} {self.what} {self.dead}")

    async def send(self, msg: Message) -> RoutedReply | Done:
        if self.dead is not None:
            raise self._gone()
        reply: RoutedReply | Done
        if msg.kind is Kind.REQUEST:
            if request_key(msg.id) in self._pending:
                # its answer could not be told apart from the other's (and a filtered result could leak)
                raise errors.UpstreamError(
                    errors.INVALID_REQUEST, "Invalid Request: a request with this id is already in flight"
                )
            meta = msg.params.get("_meta")
            token = meta.get("progressToken") if isinstance(meta, dict) else None
            limit = self.cfg.startup_timeout if msg.method == "initialize" else self.cfg.call_timeout
            reply = RoutedReply(msg.id, token, limit, self.name)
            self._pending[request_key(msg.id)] = reply
            self._order.append(reply)
        else:
            reply = Done()
        try:
            await self._write(msg.raw)
        except errors.UpstreamError:
            self._forget(reply)
            raise
        return reply

    def forget(self, reply: object, notify: bool = True) -> None:
        """The caller no longer waits for ``reply``; if it is still open, the upstream is told to cancel it."""
        if isinstance(reply, RoutedReply) and request_key(reply.request_id) in self._pending:
            self._forget(reply)
            if notify and self.dead is None:
                note = {
                    "jsonrpc": "2.0",
                    "method": "notifications/cancelled",
                    "params": {"requestId": reply.request_id, "reason": "the gateway stopped waiting"},
                }
                task = spawn(self._quiet_write(orjson.dumps(note)), name=f"cancel-{self.name}")
                self._tasks.append(task)

    async def _quiet_write(self, raw: bytes) -> None:
        with contextlib.suppress(errors.UpstreamError):
            await self._write(raw)

    def _forget(self, reply: RoutedReply | Done) -> None:
        if isinstance(reply, RoutedReply):
            self._pending.pop(request_key(reply.request_id), None)
            with contextlib.suppress(ValueError):
                self._order.remove(reply)

    async def listen(self) -> AsyncIterator[Message]:
        while True:
            item = await self._listen.get()
            if item is _END:
                return
            assert isinstance(item, Message)
            yield item

    def _route(self, msg: Message) -> None:
        if msg.kind.is_response:
            reply = self._pending.pop(request_key(msg.id), None)
            if reply is not None:
                if not self.started and msg.kind is Kind.RESULT:
                    self.started = True
                    if self.gate is not None:
                        self.gate.ok()
                with contextlib.suppress(ValueError):
                    self._order.remove(reply)
                reply.put(msg)
                return
            log.warning("upstream %r answered an unknown request id; dropped", self.name)
            return
        if msg.method == "notifications/progress":
            token = msg.params.get("progressToken")
            for r in self._order:
                if r.progress_token is not None and r.progress_token == token:
                    r.put(msg)
                    return
        if self._order:
            self._order[-1].put(msg)
            return
        with contextlib.suppress(asyncio.QueueFull):
            self._listen.put_nowait(msg)

    def _die(self, reason: str) -> None:
        if self.dead is not None:
            return
        self.dead = reason
        if not self.started and self.gate is not None and reason != STOPPED:
            self.gate.failed()
        err = self._gone()
        for r in list(self._pending.values()):
            r.put(err)
        self._pending.clear()
        self._order.clear()
        with contextlib.suppress(asyncio.QueueFull):
            self._listen.put_nowait(_END)

    async def _stop_tasks(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t


def request_key(msg_id: object) -> object:
    """A JSON-RPC id as a dict key: 1 and "1" are different requests."""
    return (type(msg_id).__name__, msg_id)
