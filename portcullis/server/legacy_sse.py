"""The legacy HTTP+SSE transport (protocol 2024-11-05) for old clients.

``GET /mcp/{server}/sse`` opens the session's one stream; its first event, ``endpoint``, names
``/mcp/{server}/messages?session_id=…`` where the client POSTs each message (answered 202). Responses and every
server message travel on the stream. Behind it, the upstream can be of any kind: the message goes through the same
flow, stages, recording and upstream code as on the Streamable HTTP endpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from aiohttp import web

from portcullis import errors
from portcullis.errors import ProtocolError, StoreError, UpstreamError
from portcullis.flow import Direction, Flow, Outcome
from portcullis.identity.tokens import AuthError
from portcullis.pipeline.record import event_record
from portcullis.server.mcp_endpoint import (
    JSON,
    McpEndpoint,
    _ClientWriter,
    _StreamJob,
    json_error,
    read_bounded,
)
from portcullis.server.sessions import GatewaySession, mint_session_id
from portcullis.tasks import spawn
from portcullis.wire.jsonrpc import Kind, Message, parse_body
from portcullis.wire.mcp import Era

log = logging.getLogger("portcullis.legacy_sse")

LEGACY_VERSION = "2024-11-05"
KEEPALIVE_SECONDS = 15.0
DISCONNECT_CHECK_SECONDS = 0.5


class _QueueSink:
    """Where a legacy session's frames go: a queue drained by its one GET stream."""

    def __init__(self) -> None:
        self.q: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=4096)

    async def write(self, frame: bytes) -> None:
        try:
            self.q.put_nowait(frame)
        except asyncio.QueueFull:
            raise ConnectionError("legacy SSE client is not reading its stream") from None


class LegacySseEndpoint:
    def __init__(self, ep: McpEndpoint) -> None:
        self.ep = ep
        self.gw = ep.gw
        self._sinks: dict[str, _QueueSink] = {}
        self._listeners: dict[str, asyncio.Task[None]] = {}

    async def open(self, request: web.Request) -> web.StreamResponse:
        server = request.match_info["server"]
        if not self.gw.known(server):
            return json_error(404, None, errors.INVALID_REQUEST, f"Not Found: no MCP server named {server!r}")
        try:
            self.ep._check_host_origin(request)
            caller = await self.gw.auth.authenticate(request.headers, self.gw.audiences(server))
        except ProtocolError as exc:
            return json_error(exc.http_status, None, exc.code, exc.message)
        except AuthError as exc:
            return await self.ep._refuse_auth(request, server, exc)
        session = GatewaySession(
            owner=caller.key,
            caller=caller,
            id=mint_session_id(),
            server=server,
            era=Era.SESSION,
            protocol_version=LEGACY_VERSION,
            buffer_size=self.gw.config.limits.stream_buffer_events,
        )
        sink = _QueueSink()
        self._sinks[session.id] = sink
        self.gw.sessions.add(session)
        resp = web.StreamResponse(
            status=200,
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        await resp.prepare(request)
        try:
            endpoint = f"/mcp/{server}/messages?session_id={session.id}"
            await resp.write(f"event: endpoint\ndata: {endpoint}\n\n".encode())
            idle = 0.0
            while True:
                try:
                    frame = await asyncio.wait_for(sink.q.get(), DISCONNECT_CHECK_SECONDS)
                except TimeoutError:
                    # aiohttp does not cancel a handler whose client left: look at the connection ourselves
                    if request.transport is None or request.transport.is_closing():
                        break
                    idle += DISCONNECT_CHECK_SECONDS
                    if idle < KEEPALIVE_SECONDS:
                        continue
                    frame = b": keep-alive\n\n"
                idle = 0.0
                if frame is None:
                    break
                await resp.write(frame)
        except (ConnectionError, RuntimeError):
            pass
        finally:
            self._sinks.pop(session.id, None)
            listener = self._listeners.pop(session.id, None)
            if listener is not None:
                listener.cancel()
            await self.gw.end_session(session, "legacy SSE stream closed")
        return resp

    async def post(self, request: web.Request) -> web.StreamResponse:
        server = request.match_info["server"]
        sid = request.query.get("session_id") or request.query.get("sessionId") or ""
        try:
            self.ep._check_host_origin(request)
            try:
                request["caller"] = await self.gw.auth.authenticate(request.headers, self.gw.audiences(server))
            except AuthError as exc:
                return await self.ep._refuse_auth(request, server, exc)
            sink = self._sinks.get(sid)
            session = await self.ep._session_for(request, server, sid)
            if sink is None:
                raise ProtocolError(404, errors.SESSION_NOT_FOUND, "Not Found: unknown or ended session")
            ctype = request.headers.get("Content-Type", "")
            if ctype.split(";", 1)[0].strip().lower() != JSON:
                raise ProtocolError(415, errors.INVALID_REQUEST, "Unsupported Media Type: use application/json")
            got = await read_bounded(request.content, self.gw.config.limits.max_body_bytes)
            if got is None:
                raise ProtocolError(413, errors.INVALID_REQUEST, "Payload Too Large")
            body = request["body"] = got
            parsed = parse_body(body)
            if isinstance(parsed, list):
                raise ProtocolError(400, errors.INVALID_REQUEST, "Invalid Request: batches are not relayed")
        except ProtocolError as exc:
            with contextlib.suppress(StoreError):
                await self.gw.commit(
                    [
                        event_record(
                            server, sid or None, "rejected", f"{exc.http_status}: {exc.message}", request.get("body")
                        )
                    ]
                )
            return json_error(exc.http_status, exc.msg_id, exc.code, exc.message)
        new = parsed.method == "initialize" and parsed.kind is Kind.REQUEST and not session.established
        if new:
            if isinstance(parsed.params.get("protocolVersion"), str):
                session.protocol_version = parsed.params["protocolVersion"]
            if server in self.gw.channel_servers and session.channel is None:
                session.channel = self.gw.new_channel(server)
                try:
                    await session.channel.start()
                except UpstreamError as exc:
                    session.channel = None
                    self.gw.background(self._answer_error(session, sink, parsed, exc), name="legacy-error")
                    return web.Response(status=202, text="Accepted")
        self.gw.background(self._process(session, sink, parsed, new), name=f"legacy-{session.id[:8]}")
        return web.Response(status=202, text="Accepted")

    def _headers(self, session: GatewaySession) -> dict[str, str]:
        return {
            "Content-Type": JSON,
            "Accept": "application/json, text/event-stream",
            "MCP-Protocol-Version": session.protocol_version or LEGACY_VERSION,
        }

    async def _answer_error(self, session: GatewaySession, sink: _QueueSink, msg: Message, exc: UpstreamError) -> None:
        flow = Flow(session.server, Era.SESSION, Direction.C2S, msg, session_id=session.id)
        flow.bind(session.caller)
        seen = self.gw.pipeline.run_request(flow)
        flow.fail(exc.code, exc.message, by="upstream", outcome=Outcome.UPSTREAM_FAILED)
        self.gw.pipeline.run_response(flow, seen)
        with contextlib.suppress(StoreError):
            await self.gw.commit(flow.records)
            assert flow.response is not None
            await _ClientWriter(sink, None).send(flow.response.raw)  # type: ignore[arg-type]

    async def _process(self, session: GatewaySession, sink: _QueueSink, msg: Message, new: bool) -> None:
        gw, ep = self.gw, self.ep
        writer = _ClientWriter(sink, None)  # type: ignore[arg-type]
        flow = Flow(
            session.server,
            Era.SESSION,
            Direction.C2S,
            msg,
            session_id=session.id,
            protocol_version=session.protocol_version,
        )
        flow.bind(session.caller)
        seen = await gw.run_request(flow)
        try:
            if flow.response is not None:
                gw.pipeline.run_response(flow, seen)
                await gw.commit(flow.records)
                await writer.send(flow.response.raw)
                return
            await gw.record_request(flow.records)
            try:
                reply: Any = await ep._send_upstream(self._headers(session), session.server, flow, session)
            except UpstreamError as exc:
                if msg.kind is Kind.REQUEST:
                    flow.fail(exc.code, exc.message, by="upstream", outcome=Outcome.UPSTREAM_FAILED)
                    gw.pipeline.run_response(flow, seen)
                    await gw.commit(flow.records)
                    assert flow.response is not None
                    await writer.send(flow.response.raw)
                return
            if new and reply.session_id is not None:
                session.upstream_session = reply.session_id
            if msg.kind is not Kind.REQUEST:
                await reply.aclose()
                await gw.commit(flow.records)
                return
            await _StreamJob(ep, flow, seen, reply, session, new, writer).run(stop_at_cut=False)
            if new and session.established and session.id not in self._listeners:
                self._listeners[session.id] = spawn(
                    self._listen(session, writer), name=f"legacy-listen-{session.id[:8]}"
                )
        except StoreError:
            log.error("recording store unavailable: a legacy SSE message is withheld")

    async def _listen(self, session: GatewaySession, writer: _ClientWriter) -> None:
        """Server messages that belong to no request travel on the one legacy stream too."""
        try:
            if session.channel is not None:
                async for m in session.channel.listen():
                    await self.ep._server_message(m, None, writer, session)
                return
            if session.server not in self.gw.http_upstreams or session.upstream_session is None:
                return
            up = self.gw.http_upstreams[session.server]
            headers = {"Accept": "text/event-stream", "MCP-Protocol-Version": session.protocol_version or ""}
            reply = await up.send("GET", None, headers, session.upstream_session)
            try:
                if reply.status != 200 or not reply.streaming:
                    return
                async for item in reply:
                    if isinstance(item, Message):
                        await self.ep._server_message(item, None, writer, session)
            finally:
                await reply.aclose(cancel=True)
        except (UpstreamError, StoreError) as exc:
            log.info("legacy session %s: standalone stream ended (%s)", session.id[:8], type(exc).__name__)
