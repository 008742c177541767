"""Streamable HTTP upstream (session era and 2026-07-28), on one shared aiohttp client session."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
import yarl

from portcullis import errors
from portcullis.config.model import ServerConfig
from portcullis.observe import tracing
from portcullis.upstream import h1
from portcullis.upstream.breaker import Breaker
from portcullis.upstream.credentials import UpstreamCredentials
from portcullis.upstream.netguard import why_unreachable
from portcullis.wire import sse
from portcullis.wire.jsonrpc import Message, parse_one
from portcullis.wire.mcp import STATELESS_VERSIONS

# headers a client may send that the upstream needs; never Authorization or Cookie (the client's credentials stay
# with the gateway)
FORWARD_REQUEST_HEADERS = ("Accept", "Content-Type", "MCP-Protocol-Version", "Mcp-Method", "Mcp-Name", "Last-Event-ID")


ROUTING_HEADERS = frozenset({"mcp-method", "mcp-name"})


def forward_headers(src: Mapping[str, str], extra: Mapping[str, str]) -> dict[str, str]:
    """The headers an upstream gets: the MCP ones the client sent, plus the gateway's own credential.

    Routing headers (``Mcp-Method``, ``Mcp-Name``, ``Mcp-Param-*``) go only with a 2026-07-28 request, whose ladder
    checked them against the body; on a session-era request nothing checked them, so they are not passed on.
    """
    stateless = src.get("MCP-Protocol-Version") in STATELESS_VERSIONS and "Mcp-Session-Id" not in src
    out = {h: v for h in FORWARD_REQUEST_HEADERS if (v := src.get(h)) is not None}
    if not stateless:
        for h in ("Mcp-Method", "Mcp-Name"):
            out.pop(h, None)
    else:
        for k, v in src.items():
            if k[:10].lower() == "mcp-param-":
                out[k] = v
    out.update(extra)
    return out


async def upstream_headers(
    creds: UpstreamCredentials, headers: Mapping[str, str], upstream_session: str | None, subject_token: str | None
) -> dict[str, str]:
    """What goes to an upstream: the forwarded headers, the gateway's credential for it, its session id."""
    h = forward_headers(headers, await creds.headers(subject_token) if creds.dynamic else creds.static)
    if upstream_session is not None:
        h["Mcp-Session-Id"] = upstream_session
    return h


@dataclass(slots=True, frozen=True)
class Priming:
    """The upstream primed its stream for resumption (an event with an id and no data), maybe with ``retry``."""

    retry: int | None


class BodyReader(Protocol):
    """A response read by chunks (the gateway's HTTP/1.1 client's, or one arriving through an agent tunnel)."""

    status: int

    @property
    def headers(self) -> Any: ...

    @property
    def content_length(self) -> int | None: ...

    async def read(self, limit: int) -> bytes: ...

    def iter_chunks(self) -> AsyncIterator[bytes]: ...

    def release(self) -> None: ...

    def close(self) -> None: ...


class HttpReply:
    __slots__ = ("_max_event", "_max_json", "_resp", "last_event_id", "retry", "session_id", "status", "streaming")

    def __init__(self, resp: aiohttp.ClientResponse | BodyReader, max_event: int, max_json: int) -> None:
        self._resp = resp
        self._max_event = max_event
        self._max_json = max_json
        self.status = resp.status
        ctype = resp.headers.get("Content-Type", "")
        self.streaming = ctype.startswith("text/event-stream")
        self.session_id = resp.headers.get("Mcp-Session-Id")
        self.last_event_id: str | None = None
        self.retry: int | None = None

    async def body(self) -> bytes:
        """The whole body of a non-streaming reply (bounded)."""
        resp = self._resp
        if not isinstance(resp, aiohttp.ClientResponse):
            try:
                return await resp.read(self._max_json)
            except h1.TooLarge as exc:
                raise errors.UpstreamError(
                    errors.UPSTREAM_PROTOCOL_ERROR, "upstream response larger than the limit"
                ) from exc
            except (h1.H1Error, TimeoutError) as exc:
                raise errors.UpstreamError(
                    errors.UPSTREAM_UNAVAILABLE, f"upstream response broke off ({type(exc).__name__})"
                ) from exc
        length = resp.content_length
        if length is not None and length > self._max_json:
            raise errors.UpstreamError(errors.UPSTREAM_PROTOCOL_ERROR, "upstream response larger than the limit")
        chunks: list[bytes] = []
        size = 0
        try:
            while chunk := await resp.content.read(65536):  # read(n) alone returns what has arrived so far
                size += len(chunk)
                if size > self._max_json:
                    raise errors.UpstreamError(
                        errors.UPSTREAM_PROTOCOL_ERROR, "upstream response larger than the limit"
                    )
                chunks.append(chunk)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise errors.UpstreamError(
                errors.UPSTREAM_UNAVAILABLE, f"upstream response broke off ({type(exc).__name__})"
            ) from exc
        return b"".join(chunks)

    async def single(self) -> Message | None:
        """The one message of a non-streaming reply (None for an empty body); the fast path for JSON replies."""
        raw = await self.body()
        return _parse_upstream(raw) if raw else None

    async def __aiter__(self) -> AsyncIterator[Message | Priming]:
        if not self.streaming:
            if self.status == 202:
                return
            raw = await self.body()
            if not raw:
                return
            yield _parse_upstream(raw)
            return
        parser = sse.SSEParser(self._max_event)
        resp = self._resp
        chunks = resp.content.iter_any() if isinstance(resp, aiohttp.ClientResponse) else resp.iter_chunks()
        try:
            async for chunk in chunks:
                for ev in parser.feed(chunk):
                    if ev.id is not None:
                        self.last_event_id = ev.id
                    if ev.retry is not None:
                        self.retry = ev.retry
                    if not ev.data.strip():
                        if ev.id is not None:  # a priming event: the stream can be resumed from here
                            yield Priming(ev.retry)
                        continue
                    if ev.event not in (None, "message"):
                        continue
                    yield _parse_upstream(ev.data)
        except sse.SSEParseError as exc:
            raise errors.UpstreamError(errors.UPSTREAM_PROTOCOL_ERROR, f"upstream SSE stream invalid: {exc}") from exc
        except (TimeoutError, aiohttp.ClientError, h1.H1Error) as exc:
            raise errors.UpstreamError(
                errors.UPSTREAM_UNAVAILABLE, f"upstream stream broke: {type(exc).__name__}"
            ) from exc

    async def aclose(self, cancel: bool = False) -> None:
        """Release the upstream response; ``cancel`` drops the connection (2026-07-28: that cancels the call)."""
        if cancel:
            self._resp.close()
        else:
            self._resp.release()


def _parse_upstream(raw: bytes) -> Message:
    try:
        return parse_one(raw)
    except errors.ProtocolError as exc:
        raise errors.UpstreamError(
            errors.UPSTREAM_PROTOCOL_ERROR, f"upstream sent an invalid message: {exc.message}"
        ) from exc


class HttpUpstream:
    kind = "streamable-http"

    def __init__(
        self,
        name: str,
        cfg: ServerConfig,
        http: aiohttp.ClientSession,
        max_event: int,
        max_json: int,
        pool: h1.Pool | None = None,
    ) -> None:
        assert cfg.url is not None
        self.name = name
        self.url = yarl.URL(cfg.url)  # parsed once, not per request
        # plain http:// goes through the gateway's own HTTP/1.1 client (a third of aiohttp's CPU per call);
        # https:// stays on aiohttp
        self._h1 = pool if self.url.scheme == "http" else None
        self.cfg = cfg
        self._http = http
        self._max_event = max_event
        self._max_json = max_json
        self._timeout = aiohttp.ClientTimeout(total=None, connect=cfg.connect_timeout, sock_read=cfg.call_timeout)
        self.credentials = UpstreamCredentials(name, cfg, http)
        self.breaker = Breaker(cfg.breaker_threshold, cfg.breaker_cooldown)

    async def send(
        self,
        method: str,
        body: bytes | None,
        headers: Mapping[str, str],
        upstream_session: str | None,
        subject_token: str | None = None,
        built: Mapping[str, Any] | None = None,
    ) -> HttpReply:
        """``subject_token``: the caller's validated access token, for an upstream whose credential is an RFC 8693
        token exchange (it goes to the authorization server, never to the upstream). ``built``: the object ``body``
        encodes, when the gateway built the request (era translation), so that its ``_meta`` trace context can be
        the upstream call's (only where the client's ``_meta`` carried one)."""
        self.breaker.check(self.name)  # raises while the circuit is open
        h = await upstream_headers(self.credentials, headers, upstream_session, subject_token)
        span = tracing.current().client(self.name, method, h)  # None unless tracing is on
        if span is not None and built is not None:
            body = tracing.with_trace_meta(built, h) or body
        resp: aiohttp.ClientResponse | h1.Response
        try:
            if self._h1 is not None:  # follows no redirect, keeps no cookies
                resp = await self._h1.request(
                    method,
                    self.url,
                    h,
                    body,
                    connect_timeout=self.cfg.connect_timeout,
                    read_timeout=self.cfg.call_timeout,
                )
            else:
                # never follow a redirect: it would carry the body and the gateway's credential to another place
                resp = await self._http.request(
                    method, self.url, data=body, headers=h, timeout=self._timeout, allow_redirects=False
                )
        except TimeoutError as exc:
            self.breaker.failed()
            raise errors.UpstreamError(
                errors.UPSTREAM_TIMEOUT, f"upstream {self.name!r} did not answer in time"
            ) from exc
        except (aiohttp.ClientError, h1.H1Error, ValueError) as exc:
            self.breaker.failed()
            raise errors.UpstreamError(
                errors.UPSTREAM_UNAVAILABLE, f"upstream {self.name!r} is unreachable ({why_unreachable(exc)})"
            ) from exc
        finally:
            if span is not None:
                span.end()
        self.breaker.ok()
        return HttpReply(resp, self._max_event, self._max_json)
