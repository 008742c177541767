"""The gateway's side of the agent tunnel: agents dial in (``GET /agent/connect``, a WebSocket), prove themselves
with an agent token, announce the servers they carry; the gateway then sends each exchange with those servers
through a live agent as a stream of the tunnel (:mod:`portcullis.tunnel.mux`).

- **Who may connect**: a valid, unrevoked agent token (``portcullis agents create``); an agent may announce only the
  servers its token allows *and* the gateway configures with ``via: agent``; anything else is refused (close code
  4403) and recorded.
- **Which agent carries a request**: a session's requests go to the agent that carried its ``initialize`` (the
  upstream's session lives behind it) while it is connected; new sessions and stateless requests go round-robin over
  the live agents of that server. A tunnel that drops fails its streams at once: callers get ``-32001`` naming the
  lost tunnel, never a hang.
- **Visibility**: connects and disconnects are audit records (``agent_connected`` / ``agent_disconnected``); the
  ``agent_connections`` table says who is connected to which replica, with heartbeats and traffic
  (``portcullis agents list``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from multidict import CIMultiDict
from sqlalchemy import Engine, insert, update

from portcullis import errors
from portcullis.config.model import ServerConfig
from portcullis.observe import tracing
from portcullis.store import agent_tokens
from portcullis.store.schema import agent_connections
from portcullis.tunnel.mux import MAX_FRAME, OPEN, Mux, Stream, TunnelError
from portcullis.upstream import h1
from portcullis.upstream.credentials import UpstreamCredentials
from portcullis.upstream.http import HttpReply, upstream_headers

log = logging.getLogger("portcullis.tunnel")

HEARTBEAT = 10.0  # seconds between WebSocket pings (and agent_connections updates)
HELLO_TIMEOUT = 10.0
MAX_PINS = 100_000  # upstream sessions remembered -> the agent that carries them


@dataclass(eq=False)
class AgentConn:
    id: str
    token: agent_tokens.AgentToken
    version: str
    servers: frozenset[str]
    mux: Mux
    remote: str
    connected_ns: int = field(default_factory=time.time_ns)
    reported: dict[str, int] = field(default_factory=dict)  # the agent's own figures (its last "stats" message)

    @property
    def name(self) -> str:
        return self.token.name


class AgentTunnelLost(h1.H1Error):
    """The agent's tunnel failed mid-response (the name shows in the caller's error: "upstream stream broke: …")."""


class TunnelResponse:
    """An upstream's response arriving through the tunnel, with the reading interface of :class:`h1.Response`."""

    def __init__(self, stream: Stream, head: Mapping[str, Any]) -> None:
        self._stream = stream
        self.status = int(head.get("status", 502))
        self.headers: CIMultiDict[str] = CIMultiDict(head.get("headers") or {})

    @property
    def content_length(self) -> int | None:
        v = self.headers.get("Content-Length")
        return int(v) if v is not None and v.isdigit() else None

    async def read(self, limit: int) -> bytes:
        try:
            return await self._stream.read_all(limit)
        except TunnelError as exc:
            if "larger than the limit" in str(exc):
                raise h1.TooLarge(str(exc)) from None
            raise AgentTunnelLost(f"tunnel: {exc}") from None

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        try:
            while chunk := await self._stream.read():
                yield chunk
        except TunnelError as exc:
            raise AgentTunnelLost(f"tunnel: {exc}") from None

    def release(self) -> None:
        self._abandon("released before its end")

    def close(self) -> None:
        self._abandon("cancelled by the gateway")

    def _abandon(self, why: str) -> None:
        s = self._stream
        if s.ended and s.local_ended:
            return
        if s.reset_reason is None:
            task = asyncio.get_running_loop().create_task(s.reset(why))
            s.mux._tasks.add(task)
            task.add_done_callback(s.mux._tasks.discard)


class AgentHub:
    def __init__(
        self,
        engine: Engine,
        agent_servers: frozenset[str],
        record: Callable[[str, str | None, str, str], None],
        replica: str,
    ) -> None:
        self.engine = engine
        self.agent_servers = agent_servers  # configured with via: agent
        self.record = record
        self.replica = replica
        self.conns: dict[str, AgentConn] = {}
        self._ended: dict[str, dict[str, int]] = {}  # agent name -> totals of its closed connections (counters)
        self._rr = itertools.count()
        self._pins: OrderedDict[tuple[str, str], str] = OrderedDict()
        self._changed = asyncio.Condition()

    # --- choosing an agent ---------------------------------------------------------------------------------------

    def live(self, server: str) -> list[AgentConn]:
        return [c for c in self.conns.values() if server in c.servers and c.mux.closed is None]

    def pick(self, server: str, upstream_session: str | None) -> AgentConn | None:
        if upstream_session is not None:
            cid = self._pins.get((server, upstream_session))
            if cid is not None and cid in self.conns and self.conns[cid].mux.closed is None:
                return self.conns[cid]
        live = self.live(server)
        if not live:
            return None
        return live[next(self._rr) % len(live)]

    def pin(self, server: str, upstream_session: str, conn: AgentConn) -> None:
        key = (server, upstream_session)
        self._pins[key] = conn.id
        self._pins.move_to_end(key)
        while len(self._pins) > MAX_PINS:
            self._pins.popitem(last=False)

    async def wait_for(self, server: str, within: float) -> bool:
        """Until an agent for ``server`` is connected (tests, and a gateway that just started)."""
        async with self._changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait_for(lambda: bool(self.live(server))), within)
        return bool(self.live(server))

    # --- the endpoint --------------------------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        auth = request.headers.get("Authorization", "")
        token = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
        remote = request.remote or "-"
        row = await asyncio.to_thread(agent_tokens.check, self.engine, token) if token else None
        if row is None:
            self.record("-", None, "agent_refused", f"from {remote}: missing, unknown, revoked or expired agent token")
            return web.json_response({"error": "invalid_token"}, status=401, headers={"WWW-Authenticate": "Bearer"})
        ws = web.WebSocketResponse(heartbeat=HEARTBEAT, max_msg_size=8 * 1024 * 1024)
        await ws.prepare(request)
        try:
            hello = await asyncio.wait_for(ws.receive_json(), HELLO_TIMEOUT)
        except (TimeoutError, ValueError, TypeError):
            await ws.close(code=4400, message=b"expected a hello message")
            return ws
        wanted = hello.get("servers") if isinstance(hello, dict) else None
        if not isinstance(wanted, list) or not all(isinstance(s, str) for s in wanted) or not wanted:
            await ws.close(code=4400, message=b"hello must list the servers the agent serves")
            return ws
        refused = sorted(set(wanted) - (set(row.servers) & self.agent_servers))
        if refused:
            why = f"agent {row.name!r} (token {row.id}) may not serve {refused}"
            self.record("-", None, "agent_refused", f"from {remote}: {why}")
            await ws.close(code=4403, message=why.encode()[:120])
            return ws
        version = str(hello.get("version", "?"))[:64]
        mux = Mux(ws)
        conn = AgentConn(secrets.token_hex(8), row, version, frozenset(wanted), mux, remote)
        mux._on_control = lambda msg: _stats(conn, msg)
        self.conns[conn.id] = conn
        await ws.send_json({"type": "welcome", "connection": conn.id, "replica": self.replica})
        self.record(
            "-",
            None,
            "agent_connected",
            f"{row.name} ({conn.id}, token {row.id}, v{version}) from {remote}: {sorted(wanted)}",
        )
        await self._saved(conn, insert_row=True)
        async with self._changed:
            self._changed.notify_all()
        reason = "closed"
        saver = asyncio.get_running_loop().create_task(self._heartbeats(conn))
        try:
            async for msg in ws:
                if msg.type is aiohttp.WSMsgType.BINARY:
                    conn.mux.feed(msg.data)
                elif msg.type is aiohttp.WSMsgType.TEXT:
                    conn.mux.control_message(msg.data)
                elif msg.type is aiohttp.WSMsgType.ERROR:
                    reason = f"error ({type(ws.exception()).__name__})"
                    break
        except TunnelError as exc:
            reason = f"protocol error: {exc}"
            with contextlib.suppress(Exception):
                await ws.close(code=4400, message=str(exc).encode()[:120])
        finally:
            saver.cancel()
            conn.mux.close(reason)
            self.conns.pop(conn.id, None)
            totals = self._ended.setdefault(row.name, {})
            for k, v in _figures(conn).items():
                totals[k] = totals.get(k, 0) + v
            if ws.close_code is not None and reason == "closed":
                reason = f"closed ({ws.close_code})"
            self.record("-", None, "agent_disconnected", f"{row.name} ({conn.id}): {reason}")
            with contextlib.suppress(Exception):
                await self._saved(conn, reason=reason)
        return ws

    async def _heartbeats(self, conn: AgentConn) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT)
            if conn.mux.closed is None and conn.id in self.conns:
                with contextlib.suppress(Exception):
                    await self._saved(conn)
                with contextlib.suppress(Exception):  # a revoked token loses its live connections too
                    row = await asyncio.to_thread(agent_tokens.load, self.engine, conn.token.id)
                    if row is None or not row.usable():
                        self.record("-", None, "agent_refused", f"{conn.name} ({conn.id}): token revoked")
                        conn.mux.close("token revoked")
                        await conn.mux.ws.close(code=4401, message=b"token revoked")

    async def _saved(self, conn: AgentConn, insert_row: bool = False, reason: str | None = None) -> None:
        now = time.time_ns()
        values: dict[str, Any] = {
            "last_seen_ns": now,
            "streams": conn.mux.opened,
            "bytes_in": conn.mux.bytes_in,
            "bytes_out": conn.mux.bytes_out,
        }
        if reason is not None:
            values |= {"disconnected_ns": now, "reason": reason[:200]}

        def write() -> None:
            with self.engine.begin() as db:
                if insert_row:
                    db.execute(
                        insert(agent_connections).values(
                            id=conn.id,
                            token_id=conn.token.id,
                            name=conn.name,
                            version=conn.version,
                            servers=orjson.dumps(sorted(conn.servers)).decode(),
                            replica=self.replica,
                            remote=conn.remote[:200],
                            connected_ns=conn.connected_ns,
                            **values,
                        )
                    )
                else:
                    db.execute(update(agent_connections).where(agent_connections.c.id == conn.id).values(**values))

        await asyncio.to_thread(write)

    def observed(self) -> list[dict[str, Any]]:
        """For the metrics: per agent name, live connections and counters since the gateway started."""
        out: dict[str, dict[str, Any]] = {n: {"agent": n, "connections": 0, **t} for n, t in self._ended.items()}
        for c in self.conns.values():
            if c.mux.closed is not None:
                continue
            row = out.setdefault(c.name, {"agent": c.name, "connections": 0})
            row["connections"] += 1
            for k, v in _figures(c).items():
                row[k] = row.get(k, 0) + v
        return list(out.values())

    async def start(self) -> None:
        """Connections this replica left marked live (it was killed, or shut down before it could say) are over."""

        def close_stale() -> None:
            with self.engine.begin() as db:
                db.execute(
                    update(agent_connections)
                    .where(agent_connections.c.replica == self.replica, agent_connections.c.disconnected_ns.is_(None))
                    .values(disconnected_ns=time.time_ns(), reason="gateway restarted")
                )

        with contextlib.suppress(Exception):
            await asyncio.to_thread(close_stale)

    async def close(self) -> None:
        for conn in list(self.conns.values()):
            conn.mux.close("gateway shutdown")
            with contextlib.suppress(Exception):
                await conn.mux.ws.close(code=1001, message=b"gateway shutdown")


def _figures(c: AgentConn) -> dict[str, int]:
    return {
        "streams": c.mux.opened,
        "bytes_in": c.mux.bytes_in,
        "bytes_out": c.mux.bytes_out,
        "failures": c.reported.get("failures", 0),
    }


def _stats(conn: AgentConn, msg: dict[str, Any]) -> None:
    if msg.get("type") == "stats":
        conn.reported = {k: int(v) for k, v in msg.items() if k in ("exchanges", "failures") and isinstance(v, int)}


class AgentUpstream:
    """An upstream reached through an agent: the same interface as :class:`portcullis.upstream.http.HttpUpstream`."""

    kind = "agent"

    def __init__(
        self, name: str, cfg: ServerConfig, hub: AgentHub, http: aiohttp.ClientSession, max_event: int, max_json: int
    ) -> None:
        self.name = name
        self.cfg = cfg
        self.hub = hub
        self._max_event = max_event
        self._max_json = max_json
        self.credentials = UpstreamCredentials(name, cfg, http)

    async def send(
        self,
        method: str,
        body: bytes | None,
        headers: Mapping[str, str],
        upstream_session: str | None,
        subject_token: str | None = None,
        built: Mapping[str, Any] | None = None,
    ) -> HttpReply:
        h = await upstream_headers(self.credentials, headers, upstream_session, subject_token)
        conn = self.hub.pick(self.name, upstream_session)
        if conn is None:
            raise errors.UpstreamError(
                errors.UPSTREAM_UNAVAILABLE,
                f"upstream {self.name!r} is reached through an agent, and none is connected",
            )
        span = tracing.current().client(self.name, method, h)  # None unless tracing is on
        if span is not None and built is not None:
            body = tracing.with_trace_meta(built, h) or body
        try:
            stream = conn.mux.open()
            head = {"server": self.name, "method": method, "headers": {str(k): v for k, v in h.items()}}
            if body is None or len(body) <= MAX_FRAME:
                await stream.send_whole(head, body or b"", OPEN)  # one frame: head, body and end
            else:
                await stream.send_head(head, OPEN)
                await stream.write(body)
                await stream.end()
            head = await asyncio.wait_for(stream.head_waiter, self.cfg.call_timeout)
        except TimeoutError as exc:
            with contextlib.suppress(Exception):
                await stream.reset("no answer in time")
            raise errors.UpstreamError(
                errors.UPSTREAM_TIMEOUT, f"upstream {self.name!r} did not answer in time"
            ) from exc
        except TunnelError as exc:
            raise errors.UpstreamError(
                errors.UPSTREAM_UNAVAILABLE, f"upstream {self.name!r}: the agent tunnel failed ({exc})"
            ) from exc
        finally:
            if span is not None:
                span.end()
        reply = HttpReply(TunnelResponse(stream, head), self._max_event, self._max_json)
        if reply.session_id is not None:
            self.hub.pin(self.name, reply.session_id, conn)
        return reply
