"""The MCP endpoint, ``/mcp/{server}``: Streamable HTTP for both wire eras.

The edge does the I/O; everything it decides about a message it asks the wire layer (checks) and the pipeline
(stages). Each client message becomes one :class:`Flow`; each message the upstream sends on a stream becomes a
server flow. A response reaches the client only after its record is durable (durability ``commit``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson
from aiohttp import web

from portcullis import errors
from portcullis.approvals.tasks import TASK_PREFIX, TERMINAL, declares_tasks
from portcullis.config.model import is_loopback
from portcullis.errors import ProtocolError, StageError, StoreError, UpstreamError
from portcullis.flow import Direction, Flow, Outcome
from portcullis.identity.edge import Caller, www_authenticate
from portcullis.identity.tokens import AuthError
from portcullis.observe.logs import JSON_LINES, LOG_CONTEXT, request_id
from portcullis.observe.tracing import target
from portcullis.pipeline.record import event_record, message_record
from portcullis.server.gateway import Gateway
from portcullis.server.limits import Limited
from portcullis.server.sessions import GatewaySession, StreamBuffer, mint_session_id
from portcullis.server.translation import LocalReply, stateless_send
from portcullis.upstream.http import HttpReply, Priming
from portcullis.upstream.routed import Done, RoutedReply, request_key
from portcullis.wire import sse
from portcullis.wire.jsonrpc import Kind, Message, error_body, error_message, parse_body
from portcullis.wire.mcp import (
    BATCH_VERSIONS,
    STATELESS_VERSIONS,
    Era,
    accepts,
    check_session_version,
    check_stateless_request,
    duplicated_routing_header,
    meta_version,
)

log = logging.getLogger("portcullis.mcp")

JSON = "application/json"
SSE_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache, no-transform",
    "X-Accel-Buffering": "no",
}
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})
MAX_UPSTREAM_RESUMES = 5


async def read_bounded(stream: Any, limit: int) -> bytes | None:
    """The whole body, or None if it is longer than ``limit`` (``read(n)`` alone returns what has arrived so far)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await stream.read(65536)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)


def json_error(status: int, msg_id: Any, code: int, message: str, data: object = None, **headers: str) -> web.Response:
    return web.Response(
        status=status, body=orjson.dumps(error_body(msg_id, code, message, data)), content_type=JSON, headers=headers
    )


class McpEndpoint:
    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        cfg = gw.config
        self._max_body = cfg.limits.max_body_bytes
        self._allowed_origins = frozenset(o.rstrip("/") for o in cfg.allowed_origins)
        self._allowed_hosts = frozenset(h.lower() for h in cfg.allowed_hosts)
        self._loopback = is_loopback(cfg.host)
        self._origin_ok: set[tuple[str | None, str | None]] = set()  # (Host, Origin) pairs already allowed

    # --- entry -----------------------------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        server = request.match_info["server"]
        if JSON_LINES[0]:
            LOG_CONTEXT.set(
                {"request_id": request_id(), "server": server, "session_id": request.headers.get("Mcp-Session-Id")}
            )
        tracer = self.gw.tracing
        if not tracer.enabled:
            return await self._handle(request, server)
        status = 500
        try:
            resp = await self._handle(request, server)
            status = resp.status
            return resp
        finally:
            flow: Flow | None = request.get("flow")  # what the flow came to (set by _relay while tracing is on)
            tracer.end_server(
                request.get("span"),
                status,
                None
                if flow is None
                else {
                    "mcp.session.id": flow.session_id,
                    "portcullis.decision": flow.decision,
                    "portcullis.outcome": flow.outcome.value if flow.outcome is not None else None,
                },
            )

    async def _handle(self, request: web.Request, server: str) -> web.StreamResponse:
        if not self.gw.known(server):
            return json_error(404, None, errors.INVALID_REQUEST, f"Not Found: no MCP server named {server!r}")
        if self.gw.draining:
            return json_error(503, None, errors.UPSTREAM_UNAVAILABLE, "Service Unavailable: the gateway is draining")
        try:
            self._check_host_origin(request)
            try:
                request["caller"] = await self.gw.auth.authenticate(request.headers, self.gw.audiences(server))
            except AuthError as exc:
                return await self._refuse_auth(request, server, exc)
            if request.method == "POST":
                return await self._post(request, server)
            if request.method == "GET":
                return await self._get(request, server)
            if request.method == "DELETE":
                return await self._delete(request, server)
            raise ProtocolError(405, errors.INVALID_REQUEST, f"Method Not Allowed: {request.method}")
        except ProtocolError as exc:
            sid = request.headers.get("Mcp-Session-Id")
            # the rejection is durable before the client hears of it (a store outage does not hide the error)
            with contextlib.suppress(StoreError):
                await self.gw.commit(
                    [event_record(server, sid, "rejected", f"{exc.http_status}: {exc.message}", _peek_body(request))]
                )
            headers = {"Allow": "GET, POST, DELETE"} if exc.http_status == 405 else {}
            if isinstance(exc, Limited):
                headers = {"Retry-After": str(exc.retry_after)}
            return json_error(exc.http_status, exc.msg_id, exc.code, exc.message, exc.data, **headers)
        except (ConnectionError, asyncio.CancelledError):
            raise
        except Exception as exc:  # the edge's last line: a bug is answered, recorded, and never forwarded further
            log.exception("internal error on %s %s", request.method, server)
            self.gw.record_event(server, request.headers.get("Mcp-Session-Id"), "internal_error", type(exc).__name__)
            return json_error(500, None, errors.INTERNAL_ERROR, "Internal error: the gateway could not handle this")

    async def _refuse_auth(self, request: web.Request, server: str, exc: AuthError) -> web.Response:
        """401/403 with the challenge that lets MCP clients find the authorization server; recorded, no token kept."""
        detail = f"{exc.status}: {exc.description}"
        with contextlib.suppress(StoreError):
            await self.gw.commit(
                [event_record(server, request.headers.get("Mcp-Session-Id"), "unauthenticated", detail)]
            )
        challenge = www_authenticate(exc, self.gw.metadata_url(server))
        msg = ("Unauthorized: " if exc.status == 401 else "Forbidden: ") + exc.description
        return json_error(exc.status, None, errors.INVALID_REQUEST, msg, **{"WWW-Authenticate": challenge})

    async def _session_for(self, request: web.Request, server: str, sid: str) -> GatewaySession:
        """The session ``sid`` of ``server``, if it exists and belongs to this caller (opened here, or by another
        replica sharing the store: then it is continued here)."""
        session = self.gw.sessions.get(sid)
        if session is None:
            session = await self.gw.adopt_session(sid, server, request["caller"])
        if session is None or session.server != server:
            raise ProtocolError(404, errors.SESSION_NOT_FOUND, "Not Found: unknown or ended session")
        caller: Caller = request["caller"]
        if session.owner != caller.key:
            raise ProtocolError(403, errors.REQUEST_DENIED, "Forbidden: this session belongs to another principal")
        return session

    def _check_host_origin(self, request: web.Request) -> None:
        key = (request.host, request.headers.get("Origin"))
        if key in self._origin_ok:
            return
        self._check_host_origin_slow(request)
        if len(self._origin_ok) < 1024:
            self._origin_ok.add(key)

    def _check_host_origin_slow(self, request: web.Request) -> None:
        host = (request.host or "").lower()
        hostname = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        if self._allowed_hosts:
            if host not in self._allowed_hosts and hostname not in self._allowed_hosts:
                raise ProtocolError(421, errors.INVALID_REQUEST, "Misdirected Request: Host header not allowed")
        elif self._loopback and not is_loopback(hostname.strip("[]")):
            raise ProtocolError(421, errors.INVALID_REQUEST, "Misdirected Request: Host header not allowed")
        origin = request.headers.get("Origin")
        if origin is None:
            return
        if origin.rstrip("/") in self._allowed_origins:
            return
        if self._loopback and not self._allowed_origins:
            o = origin.lower()
            for name in ("http://localhost", "http://127.0.0.1", "http://[::1]"):
                if o == name or o.startswith(name + ":"):
                    return
        raise ProtocolError(403, errors.INVALID_REQUEST, "Forbidden: Origin not allowed")

    # --- POST ------------------------------------------------------------------------------------------------

    async def _read_body(self, request: web.Request) -> bytes:
        ctype = request.headers.get("Content-Type", "")
        if ctype.split(";", 1)[0].strip().lower() != JSON:
            raise ProtocolError(
                415, errors.INVALID_REQUEST, "Unsupported Media Type: Content-Type must be application/json"
            )
        if not accepts(request.headers.get("Accept"), JSON, "text/event-stream"):
            raise ProtocolError(
                406, errors.INVALID_REQUEST, "Not Acceptable: Accept must list application/json and text/event-stream"
            )
        length = request.content_length
        if length is not None and length > self._max_body:
            raise ProtocolError(413, errors.INVALID_REQUEST, f"Payload Too Large: the limit is {self._max_body} bytes")
        body = await read_bounded(request.content, self._max_body)
        if body is None:
            raise ProtocolError(413, errors.INVALID_REQUEST, f"Payload Too Large: the limit is {self._max_body} bytes")
        request["body"] = body
        return body

    async def _post(self, request: web.Request, server: str) -> web.StreamResponse:
        body = await self._read_body(request)
        parsed = parse_body(body)
        headers = request.headers
        if self.gw.tracing.enabled and not isinstance(parsed, list):
            params = parsed.params
            request["span"] = self.gw.tracing.start_server(
                f"mcp {parsed.method or parsed.kind.value}",
                headers,
                params.get("_meta"),
                {
                    "mcp.server": server,
                    "mcp.method": parsed.method,
                    "mcp.name": target(params),
                    "mcp.session.id": headers.get("Mcp-Session-Id"),
                },
            )
        if log.isEnabledFor(logging.DEBUG):  # one line per message (method only: never params, never a token)
            log.debug("%s %s", server, "batch" if isinstance(parsed, list) else parsed.method or parsed.kind.value)
        limits = self.gw.limits
        if not limits.enabled:
            return await self._dispatch(request, server, parsed)
        msgs = parsed if isinstance(parsed, list) else [parsed]
        n = sum(1 for m in msgs if m.kind is Kind.REQUEST)
        if not n:
            return await self._dispatch(request, server, parsed)
        release = limits.admit(request["caller"].key, server, n)  # raises Limited: 429, recorded
        try:
            return await self._dispatch(request, server, parsed)
        finally:
            release()

    async def _dispatch(self, request: web.Request, server: str, parsed: Message | list[Message]) -> web.StreamResponse:
        headers = request.headers
        sid = headers.get("Mcp-Session-Id")
        session: GatewaySession | None = None
        if sid is not None:
            session = await self._session_for(request, server, sid)
            if session.channel is not None and session.channel.dead is not None:
                # the session's child or connection is gone: end the session, so the client starts a new one
                await self.gw.end_session(session, f"upstream {session.channel.what} {session.channel.dead}")
                raise ProtocolError(404, errors.SESSION_NOT_FOUND, "Not Found: the session's upstream has gone")
            if isinstance(parsed, list):
                if session.protocol_version not in BATCH_VERSIONS:
                    raise ProtocolError(
                        400,
                        errors.INVALID_REQUEST,
                        f"Invalid Request: batches are not allowed in protocol version {session.protocol_version}",
                    )
                return await self._batch(request, server, parsed, session)
            hv = headers.get("MCP-Protocol-Version")
            check_session_version(hv)
            if hv is not None and session.protocol_version is not None and hv != session.protocol_version:
                raise ProtocolError(
                    400,
                    errors.INVALID_REQUEST,
                    f"Bad Request: MCP-Protocol-Version {hv!r} is not the session version {session.protocol_version!r}",
                )
            return await self._relay(request, server, Era.SESSION, parsed, session, session.protocol_version)
        if isinstance(parsed, list):
            raise ProtocolError(400, errors.INVALID_REQUEST, "Invalid Request: JSON-RPC batches are not allowed here")
        msg = parsed
        if msg.method == "initialize" and msg.kind is Kind.REQUEST:
            return await self._initialize(request, server, msg)
        if meta_version(msg) is not None or headers.get("MCP-Protocol-Version") in STATELESS_VERSIONS:
            if msg.kind is Kind.REQUEST:
                version = check_stateless_request(msg, headers, duplicated_routing_header(headers))
            elif msg.kind is Kind.NOTIFICATION:
                version = meta_version(msg) or headers.get("MCP-Protocol-Version") or STATELESS_VERSIONS[-1]
            else:
                raise ProtocolError(
                    400, errors.INVALID_REQUEST, "Invalid Request: clients send no responses in 2026-07-28"
                )
            return await self._relay(request, server, Era.STATELESS, msg, None, version)
        raise ProtocolError(400, errors.INVALID_REQUEST, "Bad Request: Mcp-Session-Id header is required")

    async def _batch(
        self, request: web.Request, server: str, msgs: list[Message], session: GatewaySession
    ) -> web.StreamResponse:
        """A JSON-RPC batch (2025-03-26 only): one flow per message, answered together on one SSE stream."""
        if any(m.method == "initialize" for m in msgs):
            raise ProtocolError(400, errors.INVALID_REQUEST, "Invalid Request: initialize cannot be part of a batch")
        gw = self.gw
        has_requests = any(m.kind is Kind.REQUEST for m in msgs)
        resp: web.StreamResponse | None = None
        writer: _ClientWriter | None = None
        if has_requests:
            resp = web.StreamResponse(status=200, headers=SSE_HEADERS)
            await resp.prepare(request)
            writer = _ClientWriter(resp, session.new_stream())

        async def one(m: Message) -> None:
            flow = Flow(
                server, Era.SESSION, Direction.C2S, m, session_id=session.id, protocol_version=session.protocol_version
            )
            flow.bind(request["caller"])
            seen = await gw.run_request(flow, request.headers, transport=request.transport)
            try:
                if flow.response is not None:
                    gw.pipeline.run_response(flow, seen)
                    await gw.commit(flow.records)
                    if writer is not None and m.kind is Kind.REQUEST:
                        await writer.send(flow.response.raw)
                    return
                await gw.record_request(flow.records)
                try:
                    reply = await self._send_upstream(request.headers, server, flow, session)
                except UpstreamError as exc:
                    flow.fail(exc.code, exc.message, by="upstream", outcome=Outcome.UPSTREAM_FAILED)
                    gw.pipeline.run_response(flow, seen)
                    await gw.commit(flow.records)
                    if writer is not None and m.kind is Kind.REQUEST and flow.response is not None:
                        await writer.send(flow.response.raw)
                    return
                if m.kind is not Kind.REQUEST:
                    await reply.aclose()
                    await gw.commit(flow.records)
                    return
                assert writer is not None
                await _StreamJob(self, flow, seen, reply, session, False, writer).run(stop_at_cut=False)
            except StoreError:
                if writer is not None and m.kind is Kind.REQUEST:
                    err = error_message(m.id, errors.STORE_UNAVAILABLE, "Service Unavailable: store unavailable")
                    await writer.send(err.raw)

        await asyncio.gather(*(one(m) for m in msgs))
        if resp is None:
            return web.Response(status=202)
        assert writer is not None
        writer.close()
        with contextlib.suppress(ConnectionError):
            await resp.write_eof()
        return resp

    async def _initialize(self, request: web.Request, server: str, msg: Message) -> web.StreamResponse:
        if len(self.gw.sessions) >= self.gw.sessions.max_sessions:
            raise ProtocolError(503, errors.UPSTREAM_UNAVAILABLE, "Service Unavailable: too many sessions")
        cap = self.gw.config.limits.sessions_per_principal
        if cap is not None and self.gw.sessions.owned_by(request["caller"].key) >= cap:
            raise Limited(f"sessions per principal ({cap} open)", 60.0)
        version = msg.params.get("protocolVersion")
        session = GatewaySession(
            owner=request["caller"].key,
            caller=request["caller"],
            id=mint_session_id(),
            server=server,
            era=Era.SESSION,
            protocol_version=version if isinstance(version, str) else None,
            buffer_size=self.gw.config.limits.stream_buffer_events,
        )
        if server in self.gw.channel_servers:
            channel = self.gw.new_channel(server)
            try:
                await channel.start()
            except UpstreamError as exc:
                flow = Flow(server, Era.SESSION, Direction.C2S, msg, session_id=session.id)
                flow.bind(request["caller"])
                seen = self.gw.pipeline.run_request(flow)
                return await self._answer_upstream_error(flow, seen, exc)
            session.channel = channel
        elif await self.gw.needs_stateless_session(server):
            session.to_stateless = True
            session.init_params = dict(msg.params)
        try:
            return await self._relay(request, server, Era.SESSION, msg, session, session.protocol_version, new=True)
        finally:
            if not session.established and session.channel is not None and session.id not in self.gw.sessions:
                await session.channel.close()  # initialize failed, timed out or was refused: no orphan process

    # --- relaying one client message ------------------------------------------------------------------------

    def _task_for_held(self, flow: Flow, server: str, headers: Mapping[str, str], version: str | None) -> None:
        """A held call from a client that declared the tasks extension: answer with a gateway task instead of the
        held error, and settle the task in the background once the approval is decided."""
        resp = flow.response
        if resp is None or flow.answered_by != "authz" or resp.kind is not Kind.ERROR:
            return
        err = resp.body.get("error", {})
        data = err.get("data") if isinstance(err, dict) else None
        if not isinstance(data, dict) or not data.get("held") or not isinstance(data.get("approval"), str):
            return  # denied, or the book failed: the error stands
        caller = flow.caller
        ttl_ms = int(self.gw.config.approvals.ttl * 1000)
        task = self.gw.held_tasks.open(caller.key if caller is not None else "anonymous", data["approval"], ttl_ms)
        if task is None:
            return  # too many tasks waiting: the held error (naming the request) stands
        body = {"jsonrpc": "2.0", "id": flow.request.id, "result": {"resultType": "task", **task.envelope()}}
        flow.answer(Message(orjson.dumps(body), body, Kind.RESULT), Outcome.OK, "approvals", f"task {task.id}")
        keep = {k: v for k, v in headers.items() if k.lower() not in ("authorization", "cookie", "content-length")}
        req = Message(flow.request.raw, flow.request.body, flow.request.kind)
        self.gw.background(self._settle_task(task, server, req, caller, keep, version), name=f"task-{task.id[:12]}")

    async def _settle_task(
        self, task: Any, server: str, msg: Message, caller: Any, headers: dict[str, str], version: str | None
    ) -> None:
        gw = self.gw
        state = await gw.await_decision(task.approval_id, gw.config.approvals.ttl)
        if task.cancelled:
            return
        if state != "approved":
            why = {"denied": "denied by an approver", "withdrawn": "withdrawn"}.get(state, "not approved in time")
            task.error = {"code": errors.REQUEST_DENIED, "message": f"Approval {task.approval_id}: {why}"}
            task.set("failed", f"approval {task.approval_id} {why}")
            return
        flow = Flow(server, Era.STATELESS, Direction.C2S, msg, protocol_version=version)
        flow.bind(caller)
        try:
            seen = await gw.run_request(flow, headers, wait=False, open_request=False)  # released by the approval
            if flow.response is not None and flow.answered_by == "authz":
                task.error = {
                    "code": errors.REQUEST_DENIED,
                    "message": f"Approval {task.approval_id} was used by another call of the same kind (or lapsed)",
                }
                task.set("failed", "the approval was already used")
                return
            if flow.response is None:
                await gw.record_request(flow.records)
                reply = await self._send_upstream(headers, server, flow, None)
                msgs = await _reply_messages(reply)
                final = next((m for m in msgs if m.kind.is_response and m.id == msg.id), None)
                if final is None:
                    raise UpstreamError(errors.UPSTREAM_PROTOCOL_ERROR, "upstream answered without a response")
                flow.set_upstream_response(final)
            gw.pipeline.run_response(flow, seen)  # masking and the record, as for any response
            await gw.commit(flow.records)
        except UpstreamError as exc:
            task.error = {"code": exc.code, "message": exc.message}
            task.set("failed", "the upstream failed")
            return
        except StoreError:
            task.error = {"code": errors.STORE_UNAVAILABLE, "message": "Service Unavailable: store unavailable"}
            task.set("failed", "the store is unavailable")
            return
        out = flow.response
        assert out is not None
        if out.kind is Kind.RESULT:
            task.result = out.body.get("result")
            task.set("completed", None)
        else:
            task.error = out.body.get("error")
            task.set("failed", "the call failed")

    async def _held_task_call(self, flow: Flow, task_id: str) -> web.StreamResponse:
        """tasks/get and tasks/cancel for a task the gateway minted: answered here, for its owner only."""
        caller = flow.caller
        task = self.gw.held_tasks.get(task_id, caller.key if caller is not None else "anonymous")
        rec = message_record(flow, flow.request, Direction.C2S)
        if task is None:
            flow.fail(errors.INVALID_PARAMS, "Unknown taskId", by="approvals", data={"taskId": task_id})
        else:
            if flow.request.method == "tasks/cancel" and task.status not in TERMINAL:
                task.cancelled = True
                task.set("cancelled", "cancelled by the client")
                await asyncio.to_thread(self.gw.approvals.withdraw, task.approval_id)
            result = task.detailed() if flow.request.method == "tasks/get" else {}
            body = {"jsonrpc": "2.0", "id": flow.request.id, "result": {"resultType": "complete", **result}}
            flow.answer(Message(orjson.dumps(body), body, Kind.RESULT), Outcome.OK, "approvals")
        assert flow.response is not None
        flow.records = [rec, message_record(flow, flow.response, Direction.S2C, flow.outcome or Outcome.OK)]
        return await self._json_reply(flow, None, 200)

    def _hold_progress(
        self,
        request: web.Request,
        server: str,
        msg: Message,
        session: GatewaySession | None,
        early: list[Any],
    ) -> Any:
        """While a held call waits for its approval: progress notifications on an SSE response opened for them, when
        the client gave a progress token and accepts a stream (session era)."""
        meta = msg.params.get("_meta")
        token = meta.get("progressToken") if isinstance(meta, dict) else None
        if token is None or session is None or msg.kind is not Kind.REQUEST:
            return None
        if not accepts(request.headers.get("Accept"), "text/event-stream"):
            return None

        async def progress(n: int, text: str) -> None:
            if not early:
                resp = web.StreamResponse(status=200, headers=SSE_HEADERS)
                await resp.prepare(request)
                early.extend([resp, _ClientWriter(resp, session.new_stream())])
            note = {
                "jsonrpc": "2.0",
                "method": "notifications/progress",
                "params": {"progressToken": token, "progress": n, "message": text},
            }
            self.gw.record_event(server, session.id, "approval_progress", text)
            await early[1].send(orjson.dumps(note))

        return progress

    async def _after_hold(
        self,
        request: web.Request,
        server: str,
        flow: Flow,
        seen: int,
        session: GatewaySession | None,
        resp: web.StreamResponse,
        writer: _ClientWriter,
    ) -> web.StreamResponse:
        """The rest of a held call whose progress already went out on an SSE stream: its answer, or — released —
        the upstream's reply, on that same stream."""
        gw = self.gw
        try:
            if flow.response is None:
                await gw.record_request(flow.records)
                try:
                    reply = await self._send_upstream(request.headers, server, flow, session)
                except UpstreamError as exc:
                    flow.fail(exc.code, exc.message, by="upstream", outcome=Outcome.UPSTREAM_FAILED)
                else:
                    await _StreamJob(self, flow, seen, reply, session, False, writer).run(stop_at_cut=False)
        except StoreError:
            err = error_message(flow.request.id, errors.STORE_UNAVAILABLE, "Service Unavailable: store unavailable")
            await writer.send(err.raw)
        else:
            if flow.answered_by is not None:  # still held, denied, or failed before the upstream: answer it here
                gw.pipeline.run_response(flow, seen)
                with contextlib.suppress(StoreError):
                    await gw.commit(flow.records)
                assert flow.response is not None
                await writer.send(flow.response.raw)
        writer.close()
        with contextlib.suppress(ConnectionError):
            await resp.write_eof()
        return resp

    async def _relay(
        self,
        request: web.Request,
        server: str,
        era: Era,
        msg: Message,
        session: GatewaySession | None,
        version: str | None,
        new: bool = False,
    ) -> web.StreamResponse:
        gw = self.gw
        flow = Flow(
            server, era, Direction.C2S, msg, session_id=session.id if session else None, protocol_version=version
        )
        flow.bind(request["caller"])
        if gw.tracing.enabled:
            request["flow"] = flow
        if new and session is not None and JSON_LINES[0]:
            ctx = LOG_CONTEXT.get()
            if ctx is not None:
                ctx["session_id"] = session.id  # minted just now: the rest of initialize logs it
        if era is Era.STATELESS and msg.method in ("tasks/get", "tasks/cancel"):
            task_id = msg.params.get("taskId")
            if isinstance(task_id, str) and task_id.startswith(TASK_PREFIX):
                return await self._held_task_call(flow, task_id)
        tasks_mode = (
            era is Era.STATELESS
            and msg.kind is Kind.REQUEST
            and msg.method == "tools/call"
            and declares_tasks(msg.params.get("_meta"))
        )
        early: list[Any] = []  # [response, writer] once a held call's progress opened an SSE stream
        progress = self._hold_progress(request, server, msg, session, early)
        # a held call that waits registers itself here, so that notifications/cancelled for its id withdraws it
        slot = (session.inflight, request_key(msg.id)) if session is not None and msg.kind is Kind.REQUEST else None
        seen = await gw.run_request(
            flow, request.headers, progress, slot, wait=not tasks_mode, transport=request.transport
        )
        if tasks_mode:
            self._task_for_held(flow, server, request.headers, version)
        if early:
            return await self._after_hold(request, server, flow, seen, session, early[0], early[1])
        if flow.response is not None:  # a stage answered: the upstream never sees it
            if new and session is not None and session.channel is not None:
                await session.channel.close()
            gw.pipeline.run_response(flow, seen)
            return await self._json_reply(flow, session, 200 if msg.kind is Kind.REQUEST else 403)
        try:
            await gw.record_request(flow.records)
        except StoreError as exc:
            return self._store_refusal(flow, exc, session, new)
        try:
            reply = await self._send_upstream(request.headers, server, flow, session)
        except UpstreamError as exc:
            if new and session is not None and session.channel is not None:
                await session.channel.close()
            return await self._answer_upstream_error(flow, seen, exc)
        if new and session is not None and reply.session_id is not None:
            session.upstream_session = reply.session_id
        try:
            if msg.kind is not Kind.REQUEST:
                await reply.aclose()
                with contextlib.suppress(StoreError):
                    await gw.commit(flow.records)
                if reply.status >= 400 and reply.status != 404:
                    return json_error(
                        reply.status, None, errors.UPSTREAM_PROTOCOL_ERROR, f"upstream answered HTTP {reply.status}"
                    )
                if reply.status == 404 and session is not None:
                    await gw.end_session(session, "upstream ended the session", notify_upstream=False)
                    return json_error(404, None, errors.SESSION_NOT_FOUND, "Not Found: the upstream ended this session")
                return web.Response(status=202)
            if reply.status == 404 and session is not None and not new:
                await reply.aclose()
                await gw.end_session(session, "upstream ended the session", notify_upstream=False)
                flow.fail(
                    errors.SESSION_NOT_FOUND,
                    "Not Found: the upstream ended this session",
                    by="upstream",
                    outcome=Outcome.UPSTREAM_FAILED,
                )
                gw.pipeline.run_response(flow, seen)
                return await self._json_reply(flow, None, 404)
            if reply.streaming:
                return await self._stream_reply(request, flow, seen, reply, session, new)
            return await self._single_reply(flow, seen, reply, session, new)
        except StoreError as exc:
            with contextlib.suppress(Exception):
                await reply.aclose()
            return self._store_refusal(flow, exc, session, new)

    async def _send_upstream(
        self, headers: Mapping[str, str], server: str, flow: Flow, session: GatewaySession | None
    ) -> Any:
        msg = flow.request
        if session is not None and msg.method == "notifications/cancelled":
            job = session.inflight.get(request_key(msg.params.get("requestId")))
            if job is not None:
                job.cancel()
        # RFC 8693 token exchange: the caller's own bearer JWT (already verified at the edge; never an API key) goes
        # to the upstream's authorization server, never upstream. Paths that cannot carry it fail closed there.
        up = self.gw.http_upstreams.get(server)
        subject: str | None = None
        if up is not None and up.credentials.exchange:
            scheme, _, token = (headers.get("Authorization") or "").partition(" ")
            caller = flow.caller
            if (
                scheme.lower() == "bearer"
                and caller is not None
                and caller.principal.kind not in ("apikey", "anonymous")
            ):
                subject = token.strip() or None
        if session is None:  # a 2026-07-28 request
            if await self.gw.speaks_stateless(server):
                return await self.gw.http_upstreams[server].send("POST", msg.raw, headers, None, subject)
            return await self.gw.shared(server).forward(msg)  # the upstream speaks only the session era
        if session.channel is not None:
            return await session.channel.send(msg)
        if session.to_stateless:
            return await self._to_stateless(session, msg)
        return await self.gw.http_upstreams[server].send("POST", msg.raw, headers, session.upstream_session, subject)

    async def _to_stateless(self, session: GatewaySession, msg: Message) -> Any:
        """A session-era client's message to a 2026-07-28-only upstream: the gateway keeps the session itself."""
        if msg.kind is not Kind.REQUEST:
            return Done()  # initialized, cancelled (2026-07-28 cancels by closing a stream), responses: nothing to send
        if msg.method == "ping":
            return LocalReply({"jsonrpc": "2.0", "id": msg.id, "result": {}})
        if msg.method == "logging/setLevel":
            level = msg.params.get("level")
            session.log_level = level if isinstance(level, str) else None
            return LocalReply({"jsonrpc": "2.0", "id": msg.id, "result": {}})
        up = self.gw.http_upstreams[session.server]
        return await stateless_send(up, msg, session.init_params, session.log_level)

    async def _answer_upstream_error(self, flow: Flow, seen: int, exc: UpstreamError) -> web.StreamResponse:
        flow.fail(exc.code, exc.message, by="upstream", outcome=Outcome.UPSTREAM_FAILED)
        self.gw.pipeline.run_response(flow, seen)
        if flow.request.kind is not Kind.REQUEST:
            with contextlib.suppress(StoreError):
                await self.gw.commit(flow.records)
            return json_error(502, None, exc.code, exc.message)
        return await self._json_reply(flow, None, 200)

    def _store_refusal(self, flow: Flow, exc: StoreError, session: GatewaySession | None, new: bool) -> web.Response:
        log.error("refusing a message: %s", exc)
        if new and session is not None:
            self.gw.sessions.pop(session.id)
            if session.channel is not None:
                self.gw.record_event(flow.server, session.id, "session_abort", "store unavailable")
        return json_error(
            503,
            flow.request.id,
            errors.STORE_UNAVAILABLE,
            "Service Unavailable: the recording store cannot be written, so the gateway refuses traffic",
        )

    async def _json_reply(self, flow: Flow, session: GatewaySession | None, status: int) -> web.StreamResponse:
        assert flow.response is not None
        try:
            await self.gw.commit(flow.records)
        except StoreError as exc:
            return self._store_refusal(flow, exc, None, False)
        headers = {"Mcp-Session-Id": session.id} if session is not None else None
        return web.Response(status=status, body=flow.response.raw, content_type=JSON, headers=headers)

    async def _established(self, flow: Flow, session: GatewaySession | None, new: bool) -> None:
        """After an initialize result: the session exists from now on."""
        if not new or session is None or flow.response is None:
            return
        if flow.response.kind is Kind.RESULT:
            result = flow.response.body.get("result")
            if isinstance(result, dict) and isinstance(result.get("protocolVersion"), str):
                session.protocol_version = result["protocolVersion"]
            session.established = True
            ci = flow.request.params.get("clientInfo")
            await self.gw.open_session(session, orjson.dumps(ci).decode() if ci is not None else None)
        elif session.channel is not None:
            await session.channel.close()

    async def _single_reply(
        self, flow: Flow, seen: int, reply: Any, session: GatewaySession | None, new: bool
    ) -> web.StreamResponse:
        gw = self.gw
        try:
            msgs = await _reply_messages(reply)
        except UpstreamError as exc:
            if reply.status >= 400:
                exc = UpstreamError(exc.code, f"upstream answered HTTP {reply.status} with no JSON-RPC response")
            return await self._answer_upstream_error(flow, seen, exc)
        final = next((m for m in msgs if m.kind.is_response and m.id == flow.request.id), None)
        if final is None:
            return await self._answer_upstream_error(
                flow,
                seen,
                UpstreamError(
                    errors.UPSTREAM_PROTOCOL_ERROR, f"upstream answered HTTP {reply.status} without a response"
                ),
            )
        flow.set_upstream_response(final)
        gw.pipeline.run_response(flow, seen)
        await self._established(flow, session, new)
        return await self._json_reply(flow, session if new else None, reply.status if reply.status >= 400 else 200)

    async def _stream_reply(
        self, request: web.Request, flow: Flow, seen: int, reply: Any, session: GatewaySession | None, new: bool
    ) -> web.StreamResponse:
        buf = session.new_stream() if session is not None else None
        headers = dict(SSE_HEADERS)
        if new and session is not None:
            headers["Mcp-Session-Id"] = session.id
        resp = web.StreamResponse(status=200, headers=headers)
        await resp.prepare(request)
        job = _StreamJob(self, flow, seen, reply, session, new, _ClientWriter(resp, buf))
        outcome = await job.run(stop_at_cut=True)
        if outcome == "cut":
            # the upstream closed the stream before answering (SSE polling): so do we, and keep following the
            # upstream into the resumable buffer until the client comes back with Last-Event-ID
            job.writer.detach()
            self.gw.background(job.run(stop_at_cut=False), name=f"follow-{flow.id}")
        with contextlib.suppress(ConnectionError):
            await resp.write_eof()
        return resp

    async def _follow(self, reply: Any, flow: Flow, session: GatewaySession | None) -> AsyncIterator[Any]:
        """The upstream's messages for this flow; an HTTP stream cut before the response is resumed upstream.

        Yields :data:`CUT` where the upstream closed a stream that it primed for resumption.
        """
        async for m in reply:
            yield m
        resumes = 0
        cur = reply
        while (
            isinstance(cur, HttpReply)
            and cur.last_event_id is not None
            and session is not None
            and session.upstream_session is not None
            and session.id in self.gw.sessions  # never resume on a session that has ended
            and resumes < MAX_UPSTREAM_RESUMES
        ):
            yield CUT
            resumes += 1
            if cur.retry:
                await asyncio.sleep(min(cur.retry, 5000) / 1000)  # the upstream asked us to wait before resuming
            up = self.gw.http_upstreams[flow.server]
            nxt = await up.send(
                "GET",
                None,
                {
                    "Accept": "text/event-stream",
                    "Last-Event-ID": cur.last_event_id,
                    "MCP-Protocol-Version": session.protocol_version or "",
                },
                session.upstream_session,
            )
            if nxt.status != 200 or not nxt.streaming:
                await nxt.aclose()
                return
            try:
                async for m in nxt:
                    yield m
            finally:
                await nxt.aclose()
            cur = nxt

    async def _server_message(
        self, m: Message, parent: Flow | None, writer: _ClientWriter, session: GatewaySession | None
    ) -> bool:
        """Run a server-initiated message through the stages, record it, deliver it. False if it was blocked."""
        server = parent.server if parent is not None else (session.server if session else "")
        sflow = Flow(
            server,
            parent.era if parent else Era.SESSION,
            Direction.S2C,
            m,
            session_id=session.id if session else (parent.session_id if parent else None),
        )
        sflow.bind(parent.caller if parent is not None else (session.caller if session is not None else None))
        try:
            self.gw.pipeline.run_server_message(sflow)
        except StageError:
            self.gw.submit(sflow.records)
            self.gw.record_event(server, sflow.session_id, "blocked", sflow.detail or "a stage failed")
            return False
        await self.gw.commit(sflow.records)
        await writer.send(sflow.request.raw)
        return True

    # --- GET: the standalone stream, or resumption ----------------------------------------------------------

    async def _get(self, request: web.Request, server: str) -> web.StreamResponse:
        sid = request.headers.get("Mcp-Session-Id")
        if sid is None:
            if request.headers.get("MCP-Protocol-Version") in STATELESS_VERSIONS:
                raise ProtocolError(405, errors.INVALID_REQUEST, "Method Not Allowed: 2026-07-28 has no GET stream")
            raise ProtocolError(400, errors.INVALID_REQUEST, "Bad Request: Mcp-Session-Id header is required")
        session = await self._session_for(request, server, sid)
        if not accepts(request.headers.get("Accept"), "text/event-stream"):
            raise ProtocolError(406, errors.INVALID_REQUEST, "Not Acceptable: Accept must list text/event-stream")
        check_session_version(request.headers.get("MCP-Protocol-Version"))
        last = request.headers.get("Last-Event-ID")
        if last is not None:
            resumed = await self._resume(request, session, last)
            if resumed is not None:
                return resumed
        if session.to_stateless:
            return web.Response(status=405, headers={"Allow": "POST, DELETE"})  # a 2026-07-28 upstream has no stream
        if session.channel is not None:
            if session.get_stream_open:
                raise ProtocolError(409, errors.INVALID_REQUEST, "Conflict: a standalone stream is already open")
            return await self._listen_stream(request, session, session.channel.listen(), None)
        up = self.gw.http_upstreams[server]
        try:
            # the gateway's own headers: the client's Last-Event-ID names a gateway event, not the upstream's
            reply = await up.send(
                "GET",
                None,
                {"Accept": "text/event-stream", "MCP-Protocol-Version": session.protocol_version or ""},
                session.upstream_session,
            )
        except UpstreamError as exc:
            return json_error(502, None, exc.code, exc.message)
        if reply.status != 200 or not reply.streaming:
            await reply.aclose()
            if reply.status == 404:
                await self.gw.end_session(session, "upstream ended the session", notify_upstream=False)
                raise ProtocolError(404, errors.SESSION_NOT_FOUND, "Not Found: the upstream ended this session")
            if reply.status == 405:
                return web.Response(status=405, headers={"Allow": "POST, DELETE"})
            if 400 <= reply.status < 500:  # the client's own conflict (e.g. 409: a stream is already open): relay it
                raise ProtocolError(reply.status, errors.INVALID_REQUEST, f"upstream answered HTTP {reply.status}")
            raise ProtocolError(502, errors.UPSTREAM_PROTOCOL_ERROR, f"upstream answered HTTP {reply.status}")
        return await self._listen_stream(request, session, reply.__aiter__(), reply)

    async def _listen_stream(
        self,
        request: web.Request,
        session: GatewaySession,
        messages: AsyncIterator[Message | Priming],
        reply: HttpReply | None,
    ) -> web.StreamResponse:
        buf = session.new_stream()
        resp = web.StreamResponse(status=200, headers=SSE_HEADERS)
        await resp.prepare(request)
        writer = _ClientWriter(resp, buf)
        session.get_stream_open = True
        try:
            async for m in messages:
                if isinstance(m, Priming):
                    await writer.prime(m.retry)
                    continue
                try:
                    await self._server_message(m, None, writer, session)
                except StoreError:
                    break
                if writer.gone:
                    break
        except UpstreamError as exc:
            self.gw.record_event(session.server, session.id, "upstream_error", exc.message)
        finally:
            session.get_stream_open = False
            buf.close()
            if reply is not None:
                await reply.aclose(cancel=True)
        with contextlib.suppress(ConnectionError):
            await resp.write_eof()
        return resp

    async def _resume(self, request: web.Request, session: GatewaySession, last: str) -> web.StreamResponse | None:
        stream_no, _, n = last.partition(".")
        if not (stream_no.isdigit() and n.isdigit()):
            return None
        buf = session.streams.get(int(stream_no))
        if buf is None or int(n) < buf.oldest() - 1:
            return None
        resp = web.StreamResponse(status=200, headers=SSE_HEADERS)
        await resp.prepare(request)
        pos = int(n)
        idle = self.gw.config.limits.session_idle_timeout
        try:
            while True:
                for i, frame in buf.after(pos):
                    await resp.write(frame)
                    pos = i
                if buf.closed and not buf.after(pos):
                    break
                await buf.wait(idle)
                if not buf.after(pos) and not buf.closed:
                    break
        except ConnectionError:
            return resp
        with contextlib.suppress(ConnectionError):
            await resp.write_eof()
        return resp

    # --- DELETE ----------------------------------------------------------------------------------------------

    async def _delete(self, request: web.Request, server: str) -> web.StreamResponse:
        sid = request.headers.get("Mcp-Session-Id")
        if sid is None:
            if request.headers.get("MCP-Protocol-Version") in STATELESS_VERSIONS:
                raise ProtocolError(405, errors.INVALID_REQUEST, "Method Not Allowed: 2026-07-28 has no sessions")
            raise ProtocolError(400, errors.INVALID_REQUEST, "Bad Request: Mcp-Session-Id header is required")
        session = await self._session_for(request, server, sid)
        await self.gw.end_session(session, "client ended the session")
        return web.Response(status=200)


CUT = object()


class _StreamJob:
    """Relays one upstream SSE reply: each message through the stages, recorded, then to the client."""

    def __init__(
        self,
        ep: McpEndpoint,
        flow: Flow,
        seen: int,
        reply: Any,
        session: GatewaySession | None,
        new: bool,
        writer: _ClientWriter,
    ) -> None:
        self.ep = ep
        self.flow = flow
        self.seen = seen
        self.reply = reply
        self.session = session
        self.new = new
        self.writer = writer
        self.messages = ep._follow(reply, flow, session)
        self.done = False
        self.cancelled = False
        self._key = request_key(flow.request.id)
        if session is not None:
            session.inflight[self._key] = self

    def cancel(self) -> None:
        """The client cancelled this request (``notifications/cancelled``): stop waiting; no response is owed."""
        self.cancelled = True
        if isinstance(self.reply, RoutedReply):
            self.reply.stop()
        else:
            self.ep.gw.background(self.reply.aclose(cancel=True), name=f"cancel-{self.flow.id}")

    async def run(self, *, stop_at_cut: bool) -> str:
        """Returns 'done' (the response was sent), 'cut' (the upstream paused the stream), or 'ended'."""
        ep, flow, gw, writer = self.ep, self.flow, self.ep.gw, self.writer
        try:
            async for item in self.messages:
                if item is CUT:
                    if stop_at_cut:
                        return "cut"
                    continue
                if isinstance(item, Priming):
                    await writer.prime(item.retry)
                    continue
                m: Message = item
                if m.kind.is_response and m.id == flow.request.id:
                    flow.set_upstream_response(m)
                    gw.pipeline.run_response(flow, self.seen)
                    await ep._established(flow, self.session, self.new)
                    assert flow.response is not None
                    await gw.commit(flow.records)
                    await writer.send(flow.response.raw)
                    self.done = True
                    return "done"
                await ep._server_message(m, flow, writer, self.session)
                if writer.gone and flow.era is Era.STATELESS:
                    return "cancelled"  # 2026-07-28: a closed response stream cancels the upstream call
        except UpstreamError as exc:
            if self.cancelled:
                return self._was_cancelled()
            flow.fail(exc.code, exc.message, by="upstream", outcome=Outcome.UPSTREAM_FAILED)
            await self._answer()
            return "done"
        except StoreError:
            # fail closed: what cannot be recorded is not released; the client learns why
            log.error("recording store unavailable: withholding the rest of flow %d", flow.id)
            self.done = True
            await writer.send(
                error_message(
                    flow.request.id,
                    errors.STORE_UNAVAILABLE,
                    "Service Unavailable: the recording store cannot be written",
                ).raw
            )
            return "done"
        finally:
            if self.done or not stop_at_cut or writer.gone or self.cancelled:
                await self._close()
        if self.cancelled:
            return self._was_cancelled()
        if not writer.gone or flow.era is Era.SESSION:
            # the upstream ended the stream without answering: the client still gets exactly one response (in the
            # session era into the resumable buffer too, for a client that comes back with Last-Event-ID)
            flow.fail(
                errors.UPSTREAM_PROTOCOL_ERROR,
                "upstream closed the stream without a response",
                by="upstream",
                outcome=Outcome.UPSTREAM_FAILED,
            )
            await self._answer()
            return "done"
        return "ended"

    def _was_cancelled(self) -> str:
        flow = self.flow
        self.ep.gw.record_event(
            flow.server, flow.session_id, "cancelled", f"the client cancelled request flow {flow.id}"
        )
        return "cancelled"

    async def _answer(self) -> None:
        gw = self.ep.gw
        gw.pipeline.run_response(self.flow, self.seen)
        self.done = True
        try:
            await gw.commit(self.flow.records)
        except StoreError:
            await self.writer.send(
                error_message(
                    self.flow.request.id,
                    errors.STORE_UNAVAILABLE,
                    "Service Unavailable: the recording store cannot be written",
                ).raw
            )
            return
        assert self.flow.response is not None
        await self.writer.send(self.flow.response.raw)

    async def _close(self) -> None:
        gw, flow = self.ep.gw, self.flow
        with contextlib.suppress(Exception):
            await self.reply.aclose(cancel=not self.done)
        with contextlib.suppress(Exception):
            await self.messages.aclose()  # type: ignore[attr-defined]
        if not self.done and self.writer.gone:
            gw.record_event(flow.server, flow.session_id, "client_gone", f"client closed the stream of flow {flow.id}")
        if self.session is not None:
            if self.session.inflight.get(self._key) is self:
                del self.session.inflight[self._key]
            if self.session.channel is not None:
                # cancels it upstream if it is still open (unless the client's own cancel already went there)
                self.session.channel.forget(self.reply, notify=not self.cancelled)
        self.writer.close()


async def _reply_messages(reply: Any) -> list[Message]:
    """Every message of a reply that is read whole (one JSON body, the common case, without async iteration; else
    the messages of its stream), the reply closed afterwards. Raises UpstreamError."""
    try:
        if isinstance(reply, HttpReply) and not reply.streaming:
            one = await reply.single() if reply.status != 202 else None
            return [one] if one is not None else []
        return [m async for m in reply if isinstance(m, Message)]
    finally:
        await reply.aclose()


class _ClientWriter:
    """Writes SSE frames to the client and remembers them for resumption; notices a client that went away."""

    __slots__ = ("_buf", "_resp", "gone")

    def __init__(self, resp: web.StreamResponse, buf: StreamBuffer | None) -> None:
        self._resp = resp
        self._buf = buf
        self.gone = False

    async def send(self, data: bytes) -> None:
        buf = self._buf
        await self._write(sse.encode(data, buf.next_id() if buf is not None else None))

    async def prime(self, retry: int | None) -> None:
        """Mirror the upstream's priming event with an id of our own, so the client can resume from here."""
        if self._buf is None:
            return
        await self._write(sse.encode(b"", self._buf.next_id(), event=None, retry=retry))

    async def _write(self, frame: bytes) -> None:
        if self._buf is not None:
            self._buf.append(frame)
        if self.gone:
            return
        try:
            await self._resp.write(frame)
        except (ConnectionError, RuntimeError):
            self.gone = True

    def detach(self) -> None:
        """The client's stream ends here; later frames only go to the resumable buffer."""
        self.gone = True

    def close(self) -> None:
        if self._buf is not None:
            self._buf.close()


def _peek_body(request: web.Request) -> bytes | None:
    body = request.get("body")
    return body if isinstance(body, bytes) else None
