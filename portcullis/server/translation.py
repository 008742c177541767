"""Era translation at the upstream edge (the I/O half; the reshaping itself is in wire/translate.py).

- :class:`SharedUpstream`: a session-era upstream session held by the gateway for 2026-07-28 clients. Requests get a
  gateway-unique id (and progress token) so that many clients can share it; :class:`MappedReply` maps them back and
  gives results the 2026-07-28 shape. A server→client request on such a stream cannot reach a stateless client; the
  gateway answers it upstream with an error and does not deliver it.
- :func:`stateless_send`: a session-era client's message to a 2026-07-28-only upstream; ``initialize`` becomes
  ``server/discover``, every request carries the session's ``_meta`` envelope.
- :class:`EraProbe`: what an HTTP upstream speaks, asked once with ``server/discover``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson

from portcullis import errors
from portcullis.upstream.http import HttpUpstream, Priming
from portcullis.upstream.routed import Done, RoutedSession
from portcullis.wire import translate
from portcullis.wire.jsonrpc import Kind, Message, MsgId, error_body
from portcullis.wire.mcp import LATEST_SESSION_VERSION

log = logging.getLogger("portcullis.translation")

GATEWAY_CLIENT_INFO = {"name": "portcullis-gateway", "version": "0.1.0"}


class LocalReply:
    """An answer the gateway gives itself, shaped like an upstream reply."""

    status = 200
    streaming = False
    session_id: str | None = None

    def __init__(self, body: dict[str, Any]) -> None:
        self._msg = Message(orjson.dumps(body), body, Kind.RESULT if "result" in body else Kind.ERROR)

    async def __aiter__(self) -> AsyncIterator[Message]:
        yield self._msg

    async def aclose(self, cancel: bool = False) -> None:
        return None


class MappedReply:
    """An upstream reply seen through a translation: ids and progress tokens mapped back, results reshaped."""

    def __init__(
        self,
        inner: Any,
        upstream_id: MsgId,
        client_id: MsgId,
        client_token: object,
        method: str | None,
        to_stateless: bool,
        answer_server_request: Any = None,
        final_result: Any = None,
    ) -> None:
        self._inner = inner
        self._up_id = upstream_id
        self._client_id = client_id
        self._client_token = client_token
        self._method = method
        self._to_stateless = to_stateless
        self._answer = answer_server_request
        self._final_result = final_result
        self._shared = answer_server_request is not None  # only SharedUpstream passes a refuser
        self.status = inner.status
        self.streaming = inner.streaming
        self.session_id = None

    async def __aiter__(self) -> AsyncIterator[Message | Priming]:
        async for m in self._inner:
            if isinstance(m, Priming):
                continue  # the stream is the gateway's own upstream business; the client gets no resumption here
            if m.kind.is_response:
                if m.id != self._up_id:
                    continue
                body = {**m.body, "id": self._client_id}
                if m.kind is Kind.RESULT:
                    res = body.get("result")
                    if self._final_result is not None:
                        res = self._final_result(res)
                    elif self._to_stateless:
                        res = translate.stateless_result(self._method, res) or res
                    body["result"] = res
                yield Message(orjson.dumps(body), body, m.kind)
                return
            if m.kind is Kind.REQUEST:
                if self._answer is not None:
                    await self._answer(m)
                    continue
                yield m
                continue
            if m.method == "notifications/progress" and m.params.get("progressToken") == self._up_id:
                params = {**m.params, "progressToken": self._client_token}
                body = {**m.body, "params": params}
                yield Message(orjson.dumps(body), body, m.kind)
                continue
            if self._shared:
                continue  # on a session shared by many callers, an uncorrelated message belongs to none of them
            yield m

    async def aclose(self, cancel: bool = False) -> None:
        await self._inner.aclose(cancel)

    @property
    def last_event_id(self) -> str | None:
        return None

    @property
    def retry(self) -> int | None:
        return None


class SharedUpstream:
    """The gateway's own session with a session-era upstream, used by every 2026-07-28 client of that server."""

    def __init__(self, name: str, http: HttpUpstream | None, new_channel: Callable[[], RoutedSession] | None) -> None:
        self.name = name
        self.http = http
        self._new_channel = new_channel
        self._lock = asyncio.Lock()
        self._ids = itertools.count(1)
        self.upstream_session: str | None = None
        self.channel: RoutedSession | None = None
        self.init_result: dict[str, Any] | None = None
        self.version = LATEST_SESSION_VERSION

    def next_id(self) -> str:
        return f"portcullis-{next(self._ids)}"

    async def ensure(self) -> None:
        if self.init_result is not None and (self.channel is None or self.channel.dead is None):
            return
        async with self._lock:
            if self.init_result is not None and (self.channel is None or self.channel.dead is None):
                return
            await self._initialize()

    async def _initialize(self) -> None:
        self.init_result = None
        init = {
            "jsonrpc": "2.0",
            "id": self.next_id(),
            "method": "initialize",
            "params": {"protocolVersion": self.version, "capabilities": {}, "clientInfo": GATEWAY_CLIENT_INFO},
        }
        msg = Message(orjson.dumps(init), init, Kind.REQUEST)
        if self.http is None:
            if self.channel is not None:
                await self.channel.close()
            assert self._new_channel is not None
            self.channel = self._new_channel()
            await self.channel.start()
            reply: Any = await self.channel.send(msg)
        else:
            reply = await self.http.send("POST", msg.raw, _session_headers(self.version), None)
        result = None
        try:
            async for m in reply:
                if isinstance(m, Message) and m.kind.is_response and m.id == init["id"]:
                    if m.kind is not Kind.RESULT:
                        raise errors.UpstreamError(
                            errors.UPSTREAM_PROTOCOL_ERROR, f"upstream {self.name!r} refused the gateway's initialize"
                        )
                    result = m.body.get("result")
                    break
        finally:
            await reply.aclose()
        if not isinstance(result, dict):
            raise errors.UpstreamError(errors.UPSTREAM_PROTOCOL_ERROR, f"upstream {self.name!r} did not initialize")
        if isinstance(result.get("protocolVersion"), str):
            self.version = result["protocolVersion"]
        self.upstream_session = reply.session_id if self.http is not None else None
        note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        await self._send_raw(Message(orjson.dumps(note), note, Kind.NOTIFICATION), quiet=True)
        self.init_result = result

    async def _send_raw(self, msg: Message, quiet: bool = False) -> Any:
        if self.http is None:
            assert self.channel is not None
            return await self.channel.send(msg)
        h = _session_headers(self.version)
        reply = await self.http.send("POST", msg.raw, h, self.upstream_session, built=msg.body)
        if quiet:
            await reply.aclose()
        return reply

    async def forward(self, msg: Message) -> Any:
        """Send a 2026-07-28 client's message through the shared session; returns a reply in the client's terms."""
        await self.ensure()
        assert self.init_result is not None
        if msg.method == "server/discover":
            return LocalReply(
                {"jsonrpc": "2.0", "id": msg.id, "result": translate.discover_from_initialize(self.init_result)}
            )
        if msg.kind is not Kind.REQUEST:
            return Done()  # stateless clients cancel by closing the stream; nothing to relay
        up_id = self.next_id()
        body, token = translate.rewrite_request(msg.body, up_id)
        up = Message(orjson.dumps(body), body, Kind.REQUEST)
        reply = await self._send_raw(up)
        if reply.status == 404 and self.http is not None:  # the upstream forgot our session: start a new one once
            await reply.aclose()
            async with self._lock:
                await self._initialize()
            reply = await self._send_raw(up)
        return MappedReply(reply, up_id, msg.id, token, msg.method, True, self._refuse_server_request)

    async def _refuse_server_request(self, m: Message) -> None:
        """A server→client request on a shared stream: no stateless client can answer it in-stream."""
        err = error_body(m.id, errors.METHOD_NOT_FOUND, "the client cannot answer server requests through the gateway")
        with contextlib.suppress(errors.UpstreamError):
            await self._send_raw(Message(orjson.dumps(err), err, Kind.ERROR), quiet=True)

    async def close(self) -> None:
        if self.channel is not None:
            await self.channel.close()
        elif self.http is not None and self.upstream_session is not None:
            with contextlib.suppress(Exception):
                reply = await self.http.send("DELETE", None, _session_headers(self.version), self.upstream_session)
                await reply.aclose()


def _session_headers(version: str) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": version,
    }


async def stateless_send(up: HttpUpstream, msg: Message, init_params: dict[str, Any], log_level: str | None) -> Any:
    """Forward a session-era client's message to a 2026-07-28-only upstream."""
    meta = translate.stateless_meta(init_params.get("capabilities"), init_params.get("clientInfo"), log_level)
    if msg.method == "initialize":
        body = {"jsonrpc": "2.0", "id": msg.id, "method": "server/discover", "params": {"_meta": meta}}
        reply = await up.send("POST", orjson.dumps(body), translate.stateless_headers(body), None)
        requested = init_params.get("protocolVersion")

        def to_init(res: Any) -> Any:
            return translate.initialize_from_discover(res, requested) if isinstance(res, dict) else res

        return MappedReply(reply, msg.id, msg.id, None, "initialize", False, None, to_init)
    body = translate.with_meta(msg.body, meta)
    return await up.send("POST", orjson.dumps(body), translate.stateless_headers(body), None, built=body)


class EraProbe:
    """Asks an HTTP upstream once which wire eras it speaks, and remembers.

    2026-07-28: a ``server/discover`` that lists the version. Session era: an ``initialize`` that succeeds (the probe
    session is deleted at once).
    """

    def __init__(self) -> None:
        self._known: dict[tuple[str, str], bool] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    async def speaks_stateless(self, up: HttpUpstream) -> bool:
        return await self._ask(up, "stateless")

    async def speaks_session(self, up: HttpUpstream) -> bool:
        return await self._ask(up, "session")

    async def _ask(self, up: HttpUpstream, era: str) -> bool:
        key = (up.name, era)
        if key in self._known:
            return self._known[key]
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            if key not in self._known:
                self._known[key] = await (_probe_stateless(up) if era == "stateless" else _probe_session(up))
                log.info("upstream %r speaks the %s era: %s", up.name, era, self._known[key])
        return self._known[key]


async def _probe_session(up: HttpUpstream) -> bool:
    init = {
        "jsonrpc": "2.0",
        "id": "portcullis-probe",
        "method": "initialize",
        "params": {"protocolVersion": LATEST_SESSION_VERSION, "capabilities": {}, "clientInfo": GATEWAY_CLIENT_INFO},
    }
    reply = await up.send("POST", orjson.dumps(init), _session_headers(LATEST_SESSION_VERSION), None)
    ok = False
    try:
        if reply.status == 200:
            async for m in reply:
                if isinstance(m, Message) and m.kind.is_response:
                    ok = m.kind is Kind.RESULT
                    break
    except errors.UpstreamError:
        ok = False
    finally:
        await reply.aclose()
    if ok and reply.session_id is not None:
        with contextlib.suppress(errors.UpstreamError):
            bye = await up.send("DELETE", None, _session_headers(LATEST_SESSION_VERSION), reply.session_id)
            await bye.aclose()
    return ok


async def _probe_stateless(up: HttpUpstream) -> bool:
    meta = translate.stateless_meta({}, GATEWAY_CLIENT_INFO, None)
    body = {"jsonrpc": "2.0", "id": "portcullis-probe", "method": "server/discover", "params": {"_meta": meta}}
    reply = await up.send("POST", orjson.dumps(body), translate.stateless_headers(body), None)
    try:
        if reply.status != 200:
            return False
        async for m in reply:
            if isinstance(m, Message) and m.kind is Kind.RESULT:
                res = m.body.get("result")
                versions = res.get("supportedVersions") if isinstance(res, dict) else None
                return isinstance(versions, list) and translate.STATELESS_VERSION in versions
        return False
    except errors.UpstreamError:
        return False
    finally:
        await reply.aclose()
