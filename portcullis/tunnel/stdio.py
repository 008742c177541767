"""stdio servers behind an agent: one stream of the tunnel per gateway session, carrying the child's newline-delimited
JSON-RPC both ways. The gateway's side is a :class:`~portcullis.upstream.routed.RoutedSession` like a local child
(so routing by id and progress token, restarts and cancellation work unchanged); the agent starts the child when
the stream opens, with its own environment and secrets, and ends the child's process group when the stream is
reset or the tunnel drops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import orjson

from portcullis import errors
from portcullis.config.model import AgentServerConfig, ServerConfig
from portcullis.tasks import spawn
from portcullis.tunnel.hub import AgentHub
from portcullis.tunnel.mux import OPEN, Stream, TunnelError
from portcullis.upstream.routed import STOPPED, RestartGate, RoutedSession
from portcullis.upstream.stdio import child_env, end_group
from portcullis.wire.jsonrpc import parse_one

log = logging.getLogger("portcullis.tunnel")


class TunnelStdioSession(RoutedSession):
    """The gateway's side: a stdio child that runs behind an agent."""

    what = "process behind the agent"

    def __init__(self, name: str, cfg: ServerConfig, hub: AgentHub, max_line: int, gate: RestartGate | None) -> None:
        super().__init__(name, cfg, gate)
        self.hub = hub
        self._max_line = max_line
        self._stream: Stream | None = None

    async def start(self) -> None:
        if self.gate is not None:
            self.gate.check(self.name)
        conn = self.hub.pick(self.name, None)
        if conn is None:
            raise errors.UpstreamError(
                errors.UPSTREAM_UNAVAILABLE,
                f"upstream {self.name!r} is reached through an agent, and none is connected",
            )
        try:
            stream = conn.mux.open()
            await stream.send_head({"server": self.name, "kind": "stdio"}, OPEN)
            head = await asyncio.wait_for(stream.head_waiter, self.cfg.startup_timeout)
        except (TunnelError, TimeoutError) as exc:
            if self.gate is not None:
                self.gate.failed()
            raise errors.UpstreamError(
                errors.UPSTREAM_UNAVAILABLE, f"upstream {self.name!r} could not be started by the agent ({exc})"
            ) from exc
        if head.get("status") != 200:
            raise errors.UpstreamError(errors.UPSTREAM_UNAVAILABLE, f"upstream {self.name!r}: {head.get('detail')}")
        self._stream = stream
        self._tasks.append(spawn(self._read(stream), name=f"agent-stdio-{self.name}"))

    async def _write(self, raw: bytes) -> None:
        if self.dead is not None or self._stream is None:
            raise self._gone()
        if b"\n" in raw:  # newline-delimited framing: re-encode compactly (JSON strings escape newlines)
            raw = orjson.dumps(orjson.loads(raw))
        try:
            await self._stream.write(raw + b"\n")
        except TunnelError as exc:
            raise errors.UpstreamError(errors.UPSTREAM_UNAVAILABLE, f"upstream {self.name!r}: {exc}") from exc

    async def _read(self, stream: Stream) -> None:
        buf = b""
        reason = "exited"
        try:
            while chunk := await stream.read():
                buf += chunk
                if len(buf) > self._max_line and b"\n" not in buf:
                    reason = "wrote a line longer than the limit"
                    await stream.reset(reason)
                    return
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    if not line.strip():
                        continue
                    try:
                        msg = parse_one(line.strip())
                    except errors.ProtocolError:
                        log.warning("upstream %r wrote a line that is not JSON-RPC; ignored", self.name)
                        continue
                    self._route(msg)
        except TunnelError as exc:
            reason = f"lost ({exc})"
        finally:
            self._die(reason)

    async def close(self) -> None:
        self._die(STOPPED)
        if self._stream is not None:
            with contextlib.suppress(Exception):
                await self._stream.reset("session ended")
        await self._stop_tasks()


async def serve_stdio(stream: Stream, name: str, local: AgentServerConfig, max_line: int) -> None:
    """The agent's side: start the child, pump both ways, end the child when either side ends."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *(local.command or []),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            env=child_env(local),
            cwd=local.cwd,
            start_new_session=True,
            limit=max_line,
        )
    except OSError as exc:
        await stream.send_head({"status": 502, "detail": f"could not be started ({exc.strerror or exc})"})
        await stream.end()
        return
    await stream.send_head({"status": 200})
    assert proc.stdin is not None and proc.stdout is not None
    stdin, stdout = proc.stdin, proc.stdout

    async def to_child() -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):
            while chunk := await stream.read():
                stdin.write(chunk)
                await stdin.drain()

    async def from_child() -> None:
        while chunk := await stdout.read(65536):
            await stream.write(chunk)
        await stream.end()

    tasks = [spawn(to_child(), name=f"to-{name}"), spawn(from_child(), name=f"from-{name}")]
    try:
        await tasks[1]  # the child's output ended: it exited
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await end_group(proc)
