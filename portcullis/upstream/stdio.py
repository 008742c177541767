"""stdio upstream: one child process per gateway session, spoken to with newline-delimited JSON-RPC.

The child gets only an allow-listed environment plus what the config names; it runs in its own process group so
the whole tree is ended on close (TERM, then KILL after a grace period). Messages the child writes are routed to
the stream of the request they belong to: the response by id, progress by progress token, anything else
(logging, server→client requests) to the newest request still open, or to the standalone stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import signal
import sys
import time
from collections import deque
from collections.abc import AsyncIterator

import orjson

from portcullis import errors
from portcullis.config.model import ServerConfig
from portcullis.tasks import spawn
from portcullis.wire.jsonrpc import Kind, Message, MsgId, parse_one

log = logging.getLogger("portcullis.upstream.stdio")

# like the MCP SDK's default: what a child needs to run, nothing that names the gateway's own secrets
DEFAULT_ENV_ALLOWLIST = (
    ("HOME", "LOGNAME", "PATH", "SHELL", "TERM", "USER", "LANG", "LC_ALL", "TMPDIR", "NODE_PATH", "VIRTUAL_ENV")
    if sys.platform != "win32"
    else ("APPDATA", "PATH", "SYSTEMROOT", "TEMP", "USERNAME", "USERPROFILE")
)
TERM_GRACE = 2.0
_END = object()


def child_env(cfg: ServerConfig) -> dict[str, str]:
    env = {k: v for k in DEFAULT_ENV_ALLOWLIST if (v := os.environ.get(k)) is not None}
    for k in cfg.env_passthrough:
        if (v := os.environ.get(k)) is not None:
            env[k] = v
    env.update(cfg.env)
    return env


class StdioReply:
    """Messages for one forwarded request, fed by the child's reader."""

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
    """Backoff for a server whose children keep dying before they finish ``initialize`` (a crash loop).

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


class StdioSession:
    """One child process serving one gateway session."""

    def __init__(self, name: str, cfg: ServerConfig, max_line: int, gate: RestartGate | None = None) -> None:
        assert cfg.command is not None
        self.name = name
        self.cfg = cfg
        self.gate = gate
        self.started = False
        self._max_line = max_line
        self._proc: asyncio.subprocess.Process | None = None
        self._pending: dict[object, StdioReply] = {}
        self._order: deque[StdioReply] = deque()
        self._listen: asyncio.Queue[object] = asyncio.Queue(maxsize=1024)
        self._tasks: list[asyncio.Task[None]] = []
        self.dead: str | None = None
        self.stderr_bytes = 0

    async def start(self) -> None:
        if self.gate is not None:
            self.gate.check(self.name)
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *(self.cfg.command or []),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=child_env(self.cfg),
                cwd=self.cfg.cwd,
                start_new_session=True,
                limit=self._max_line,
            )
        except OSError as exc:
            if self.gate is not None:
                self.gate.failed()
            raise errors.UpstreamError(
                errors.UPSTREAM_UNAVAILABLE, f"upstream {self.name!r} could not be started ({exc.strerror or exc})"
            ) from exc
        self._tasks.append(spawn(self._read_stdout(), name=f"stdio-out-{self.name}"))
        self._tasks.append(spawn(self._drain_stderr(), name=f"stdio-err-{self.name}"))

    async def send(self, msg: Message) -> StdioReply | Done:
        if self.dead is not None or self._proc is None or self._proc.stdin is None:
            raise errors.UpstreamError(errors.UPSTREAM_UNAVAILABLE, f"upstream {self.name!r} process has exited")
        reply: StdioReply | Done
        if msg.kind is Kind.REQUEST:
            meta = msg.params.get("_meta")
            token = meta.get("progressToken") if isinstance(meta, dict) else None
            limit = self.cfg.startup_timeout if msg.method == "initialize" else self.cfg.call_timeout
            reply = StdioReply(msg.id, token, limit, self.name)
            self._pending[_key(msg.id)] = reply
            self._order.append(reply)
        else:
            reply = Done()
        raw = msg.raw
        if b"\n" in raw:  # newline-delimited framing: re-encode compactly (JSON strings escape newlines)
            raw = orjson.dumps(msg.body)
        try:
            self._proc.stdin.write(raw + b"\n")
            await self._proc.stdin.drain()
        except (ConnectionError, RuntimeError) as exc:
            self._forget(reply)
            raise errors.UpstreamError(
                errors.UPSTREAM_UNAVAILABLE, f"upstream {self.name!r} process has exited"
            ) from exc
        return reply

    def forget(self, reply: StdioReply | Done) -> None:
        """The caller no longer waits for ``reply``; if it is still open, the child is told to cancel it."""
        if isinstance(reply, StdioReply) and _key(reply.request_id) in self._pending:
            self._forget(reply)
            self._cancel(reply.request_id)

    def _cancel(self, request_id: MsgId) -> None:
        if self.dead is not None or self._proc is None or self._proc.stdin is None:
            return
        note = {
            "jsonrpc": "2.0",
            "method": "notifications/cancelled",
            "params": {"requestId": request_id, "reason": "the gateway stopped waiting"},
        }
        with contextlib.suppress(ConnectionError, RuntimeError):
            self._proc.stdin.write(orjson.dumps(note) + b"\n")

    def _forget(self, reply: StdioReply | Done) -> None:
        if isinstance(reply, StdioReply):
            self._pending.pop(_key(reply.request_id), None)
            with contextlib.suppress(ValueError):
                self._order.remove(reply)

    async def listen(self) -> AsyncIterator[Message]:
        while True:
            item = await self._listen.get()
            if item is _END:
                return
            assert isinstance(item, Message)
            yield item

    async def _read_stdout(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        out = self._proc.stdout
        reason = "exited"
        try:
            while True:
                try:
                    line = await out.readline()
                except ValueError:
                    reason = "wrote a line longer than the limit"
                    break
                if not line:
                    break
                line = line.strip()
                if not line:
                    continue
                try:
                    msg = parse_one(line)
                except errors.ProtocolError:
                    log.warning("upstream %r wrote a line that is not JSON-RPC; ignored", self.name)
                    continue
                self._route(msg)
        finally:
            self._die(reason)

    def _route(self, msg: Message) -> None:
        if msg.kind.is_response:
            reply = self._pending.pop(_key(msg.id), None)
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

    async def _drain_stderr(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        while True:
            chunk = await self._proc.stderr.read(65536)
            if not chunk:
                return
            self.stderr_bytes += len(chunk)

    def _die(self, reason: str) -> None:
        if self.dead is not None:
            return
        self.dead = reason
        if not self.started and self.gate is not None and reason != "was stopped by the gateway":
            self.gate.failed()
        err = errors.UpstreamError(errors.UPSTREAM_UNAVAILABLE, f"upstream {self.name!r} process {reason}")
        for r in list(self._pending.values()):
            r.put(err)
        self._pending.clear()
        self._order.clear()
        with contextlib.suppress(asyncio.QueueFull):
            self._listen.put_nowait(_END)

    async def close(self) -> None:
        self._die("was stopped by the gateway")
        proc = self._proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), TERM_GRACE)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
        elif proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t


def _key(msg_id: MsgId) -> object:
    # JSON-RPC ids compare by type and value: 1 and "1" are different requests
    return (type(msg_id).__name__, msg_id)
