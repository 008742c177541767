"""``portcullis connect SERVER``: a stdio MCP server that relays to the gateway, for stdio-only clients.

stdin carries newline-delimited JSON-RPC from the client (a desktop app, an IDE); each message is POSTed to
``<gateway>/mcp/<SERVER>`` (Streamable HTTP) with ``Authorization: Bearer <token>`` from the ``portcullis login``
cache. What comes back (a JSON body, or each event of an SSE stream, in order) is written to stdout, one message per
line. After ``initialize`` the relay keeps the ``Mcp-Session-Id`` the gateway minted and the negotiated
``MCP-Protocol-Version``, then opens the standalone GET stream (skipped on 405) and relays it too. The client's
answers to server→client requests (sampling, elicitation, roots) are POSTed like any other message.

Every request read from stdin gets exactly one response on stdout: the gateway's, or an error of ours when the
gateway cannot be reached, times out, ends a stream without answering, or refuses the token (a 401 after one refresh
attempt becomes an error that says to run ``portcullis login``). A session the gateway forgot (404) is
re-initialized once with the client's own ``initialize`` and the message is retried. On stdin EOF the relay waits
for the requests still in flight, DELETEs the session and exits; SIGTERM/SIGINT skip the wait.

Ordering: a notification or response is sent only after the message before it has been sent, and the next message
waits until it was accepted (HTTP 202), so ``notifications/initialized`` reaches the gateway before the requests that
follow it. A request only has to be on the wire before the next message goes: its answer may take long and may need
the client's answer to a sampling request first.

Logs go to stderr and never carry a token.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import enum
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, BinaryIO

import aiohttp
import click
import orjson

from portcullis import errors
from portcullis.cli.login import (
    AiohttpOAuth,
    CacheKey,
    LoginEntry,
    LoginRequired,
    OAuthError,
    TokenCache,
    TooLarge,
    cache_keys,
    config_dir,
    fresh_entry,
    login_command,
    normalize_gateway,
    read_limited,
    token_action,
)
from portcullis.tasks import spawn
from portcullis.wire.mcp import META_VERSION_KEY, NAME_PARAM, STATELESS_VERSIONS
from portcullis.wire.sse import SSEParseError, SSEParser

log = logging.getLogger("portcullis.connect")

ACCEPT_BOTH = "application/json, text/event-stream"
DEFAULT_MAX_LINE = 16 * 1024 * 1024
CONNECT_TIMEOUT = 10.0
SHORT_TIMEOUT = 30.0  # notifications and responses (answered 202 at once)
DELETE_TIMEOUT = 1.5  # fits inside a client's grace period after it closes our stdin
LISTEN_IDLE = 300.0  # a silent GET stream is reopened after this long (a half-open connection is caught)
MAX_STREAM_RESUMES = 5
MAX_LISTEN_FAILURES = 5
READ_CHUNK = 64 * 1024


# ---------------------------------------------------------------------------------------------------------------
# pure helpers (unit-tested)


class Oversize:
    """Marks a stdin line that exceeded the limit (it was dropped)."""

    def __init__(self, size: int) -> None:
        self.size = size


class LineSplitter:
    """Bytes in, complete lines out (without the line break); a line longer than ``max_line`` is dropped and reported
    once as :class:`Oversize`, its remainder skipped up to the next newline. Memory stays bounded by ``max_line``."""

    def __init__(self, max_line: int) -> None:
        self.max_line = max_line
        self._buf = bytearray()
        self._skipping = False

    def feed(self, data: bytes) -> list[bytes | Oversize]:
        out: list[bytes | Oversize] = []
        self._buf += data
        while True:
            nl = self._buf.find(b"\n")
            if nl < 0:
                if len(self._buf) > self.max_line + 1:  # (+1: a line of max_line may still get its \r\n)
                    if not self._skipping:
                        out.append(Oversize(len(self._buf)))
                    self._skipping = True
                    self._buf.clear()
                return out
            line = bytes(self._buf[:nl])
            del self._buf[: nl + 1]
            if self._skipping:
                self._skipping = False
                continue
            if line.endswith(b"\r"):
                line = line[:-1]
            if len(line) > self.max_line:
                out.append(Oversize(len(line)))
                continue
            if line.strip():
                out.append(line)

    def end(self) -> list[bytes | Oversize]:
        """At EOF: a last line without a newline still counts."""
        rest, self._buf = bytes(self._buf).rstrip(b"\r"), bytearray()
        if self._skipping or not rest.strip():
            return []
        return [Oversize(len(rest)) if len(rest) > self.max_line else rest]


def _members(body: Any) -> list[Any]:
    return body if isinstance(body, list) else [body]


def request_ids(body: Any) -> list[Any]:
    """The ids of the requests in a message or batch (they each need exactly one response)."""
    return [
        m["id"]
        for m in _members(body)
        if isinstance(m, dict) and isinstance(m.get("method"), str) and m.get("id") is not None
    ]


def response_ids(body: Any) -> list[Any]:
    return [
        m.get("id")
        for m in _members(body)
        if isinstance(m, dict) and "method" not in m and ("result" in m or "error" in m)
    ]


def is_initialize(body: Any) -> bool:
    return isinstance(body, dict) and body.get("method") == "initialize" and body.get("id") is not None


def error_line(msg_id: Any, code: int, message: str, data: Any = None) -> bytes:
    err: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        err["data"] = data
    return orjson.dumps({"jsonrpc": "2.0", "id": msg_id, "error": err})


def one_line(raw: bytes) -> tuple[bytes, Any]:
    """A JSON-RPC message as one stdout line: its bytes unchanged when they hold no line break, else re-encoded.
    Raises ValueError for what is not JSON."""
    body = orjson.loads(raw)
    text = raw.strip()
    if b"\n" in text or b"\r" in text:
        text = orjson.dumps(body)
    return text, body


def _header_value(value: str) -> str:
    if value.isascii() and value.isprintable() and value == value.strip():
        return value
    return "=?base64?" + base64.b64encode(value.encode()).decode("ascii") + "?="


def stateless_headers(body: Any) -> dict[str, str]:
    """A 2026-07-28 request carries its version, method and target in headers that mirror the body."""
    if not isinstance(body, dict) or not isinstance(body.get("method"), str):
        return {}
    params = body.get("params")
    meta = params.get("_meta") if isinstance(params, dict) else None
    version = meta.get(META_VERSION_KEY) if isinstance(meta, dict) else None
    if version not in STATELESS_VERSIONS:
        return {}
    method = body["method"]
    headers = {"MCP-Protocol-Version": str(version), "Mcp-Method": method}
    key = NAME_PARAM.get(method)
    if key is not None and isinstance(params, dict) and isinstance(params.get(key), str):
        headers["Mcp-Name"] = _header_value(params[key])
    return headers


# ---------------------------------------------------------------------------------------------------------------
# tokens


class TokenSource:
    """The bearer token for one endpoint, from the ``portcullis login`` cache (re-read when the file changes, so a
    login in another terminal is picked up), refreshed when expired or refused."""

    def __init__(self, cache: TokenCache, keys: list[CacheKey], session: aiohttp.ClientSession) -> None:
        self.cache = cache
        self.keys = keys
        self.http = AiohttpOAuth(session)
        self.problem: str | None = "no cached login"
        self.last: str | None = None  # the token most recently handed out
        self._lock = asyncio.Lock()

    def _find(self) -> LoginEntry | None:
        for key in self.keys:
            entry = self.cache.load(key)
            if entry is not None and entry.token is not None:
                return entry
        return None

    async def _fresh(self, failed: str | None) -> str | None:
        async with self._lock:
            found = self._find()
            if found is None or found.token is None:
                self.problem = "no cached login"
                return None
            if token_action(found.token, time.time(), failed) == "use":  # the common case: no lock, no refresh
                self.problem = None
                self.last = found.token.access_token
                return self.last
            key = found.key
            try:
                entry = await fresh_entry(self.cache, key, self.http, failed=failed)
            except LoginRequired as exc:
                self.problem = str(exc)
                log.warning("no usable token for %s: %s", key.resource, exc)
                return None
            except OAuthError as exc:
                self.problem = f"the token refresh failed: {exc.message}"
                log.warning("%s", self.problem)
                return None
            assert entry.token is not None
            self.problem = None
            self.last = entry.token.access_token
            return self.last

    async def get(self) -> str | None:
        return await self._fresh(None)

    async def unauthorized(self, used: str | None) -> str | None:
        """The gateway refused ``used``: a newer cached token, a refreshed one, or None."""
        token = await self._fresh(used)
        return None if token is None or token == used else token


# ---------------------------------------------------------------------------------------------------------------
# the relay


class Outcome(enum.Enum):
    DONE = "done"
    UNAUTHORIZED = "unauthorized"
    SESSION_GONE = "session_gone"


class Stdout:
    """One JSON-RPC message per line on a binary stream; a closed reader ends the relay."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream
        self.gone = asyncio.Event()

    def write(self, line: bytes) -> None:
        if self.gone.is_set():
            return
        try:
            self.stream.write(line + b"\n")
            self.stream.flush()
        except (BrokenPipeError, ConnectionError, ValueError, OSError):
            log.info("stdout closed: the client went away")
            self.gone.set()


class Relay:
    def __init__(
        self,
        gateway: str,
        server: str,
        out: Stdout,
        tokens: Callable[[aiohttp.ClientSession], TokenSource],
        *,
        request_timeout: float = 600.0,
        max_line: int = DEFAULT_MAX_LINE,
    ) -> None:
        self.gateway = gateway
        self.server = server
        self.endpoint = f"{gateway}/mcp/{server}"
        self.out = out
        self._make_tokens = tokens
        self.request_timeout = request_timeout
        self.max_line = max_line
        self.session_id: str | None = None
        self.protocol_version: str | None = None
        self._init_raw: bytes | None = None
        self._reinit_lock = asyncio.Lock()
        self._reinits = 0
        self._inflight: set[asyncio.Task[None]] = set()
        self._listener: asyncio.Task[None] | None = None
        self._http: aiohttp.ClientSession | None = None
        self._tokens: TokenSource | None = None

    @property
    def http(self) -> aiohttp.ClientSession:
        assert self._http is not None
        return self._http

    @property
    def tokens(self) -> TokenSource:
        assert self._tokens is not None
        return self._tokens

    @property
    def login_hint(self) -> str:
        return f"portcullis login --gateway {self.gateway} --server {self.server}"

    # --- lifecycle -----------------------------------------------------------------------------------------------

    async def run(self, stdin_fd: int) -> int:
        trace = aiohttp.TraceConfig()
        trace.on_request_chunk_sent.append(_on_chunk_sent)
        connector = aiohttp.TCPConnector(limit=64)
        async with aiohttp.ClientSession(connector=connector, trace_configs=[trace]) as http:
            self._http = http
            self._tokens = self._make_tokens(http)
            loop = asyncio.get_running_loop()
            stop = asyncio.Event()
            for sig in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.add_signal_handler(sig, stop.set)
            queue: asyncio.Queue[bytes | Oversize | None] = asyncio.Queue(maxsize=64)
            _start_stdin_reader(stdin_fd, self.max_line, loop, queue)
            pump = spawn(self._pump(queue), name="connect-stdin")
            stopper = spawn(stop.wait(), name="connect-signal")
            gone = spawn(self.out.gone.wait(), name="connect-stdout")
            try:
                await asyncio.wait({pump, stopper, gone}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for t in (pump, stopper, gone, *self._inflight):
                    t.cancel()
                await asyncio.gather(pump, stopper, gone, *self._inflight, return_exceptions=True)
                await self._close()
        return 0

    async def _pump(self, queue: asyncio.Queue[bytes | Oversize | None]) -> None:
        while True:
            item = await queue.get()
            if item is None:
                break
            if isinstance(item, Oversize):
                log.warning("dropped a %d-byte message (limit %d)", item.size, self.max_line)
                self.out.write(error_line(None, errors.INVALID_REQUEST, f"message larger than {self.max_line} bytes"))
                continue
            try:
                body = orjson.loads(item)
            except orjson.JSONDecodeError:
                self.out.write(error_line(None, errors.PARSE_ERROR, "Parse error: not JSON"))
                continue
            if not isinstance(body, dict | list) or body == []:
                self.out.write(error_line(None, errors.INVALID_REQUEST, "Invalid Request"))
                continue
            await self._dispatch(item, body)
        log.debug("stdin closed; waiting for %d request(s) in flight", len(self._inflight))
        if self._inflight:
            await asyncio.gather(*list(self._inflight), return_exceptions=True)

    async def _dispatch(self, raw: bytes, body: Any) -> None:
        if is_initialize(body):
            self._init_raw = raw
            await self._send(raw, body)  # everything after it needs the session it creates
            return
        sent = asyncio.Event()
        task = spawn(self._send(raw, body, sent), name="connect-post")
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)
        if request_ids(body):
            await sent.wait()  # on the wire; its answer may wait for ours to a server→client request
        else:
            await asyncio.wait({task})  # a notification or a response: accepted before the next message goes
            if isinstance(body, dict) and body.get("method") == "notifications/initialized":
                self._start_listening()

    async def _close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            await asyncio.gather(self._listener, return_exceptions=True)
        if self.session_id is None:
            return
        try:
            headers = self._headers(self.tokens.last, accept=None, content=False)
            async with self.http.delete(
                self.endpoint, headers=headers, timeout=aiohttp.ClientTimeout(total=DELETE_TIMEOUT)
            ) as resp:
                log.debug("DELETE session: HTTP %d", resp.status)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            log.info("could not end the session: %s", exc or type(exc).__name__)

    # --- POST ----------------------------------------------------------------------------------------------------

    def _headers(
        self, token: str | None, body: Any = None, *, accept: str | None = ACCEPT_BOTH, content: bool = True
    ) -> dict[str, str]:
        headers: dict[str, str] = {}
        if accept:
            headers["Accept"] = accept
        if content:
            headers["Content-Type"] = "application/json"
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if self.session_id is not None:
            headers["Mcp-Session-Id"] = self.session_id
        if self.protocol_version is not None:
            headers["MCP-Protocol-Version"] = self.protocol_version
        elif body is not None and self.session_id is None:
            headers.update(stateless_headers(body))
        return headers

    async def _send(self, raw: bytes, body: Any, sent: asyncio.Event | None = None) -> None:
        pending = set(map(_id_key, request_ids(body)))
        ids = {_id_key(i): i for i in request_ids(body)}
        retried_auth = retried_session = False
        try:
            while True:
                token = await self.tokens.get()
                sid = self.session_id
                outcome = await self._post_once(raw, body, token, pending, sent)
                if outcome is Outcome.UNAUTHORIZED and not retried_auth:
                    retried_auth = True
                    if await self.tokens.unauthorized(token) is not None:
                        continue
                if outcome is Outcome.UNAUTHORIZED:
                    why = self.tokens.problem or "the gateway refused the token"
                    log.warning("not authenticated to %s (%s); run: %s", self.endpoint, why, self.login_hint)
                    self._fail(
                        pending,
                        ids,
                        errors.INVALID_REQUEST,
                        f"Unauthorized: the gateway refused the request ({why}). Run `{self.login_hint}`, then retry.",
                        {"login": self.login_hint},
                    )
                    return
                if outcome is Outcome.SESSION_GONE and not retried_session and sid is not None:
                    retried_session = True
                    if await self._reinitialize(sid):
                        continue
                if outcome is Outcome.SESSION_GONE:
                    self._fail(pending, ids, errors.SESSION_NOT_FOUND, "the gateway ended the session")
                    return
                break
            if pending:
                self._fail(
                    pending, ids, errors.UPSTREAM_PROTOCOL_ERROR, "the gateway ended the reply without answering"
                )
        except TimeoutError as exc:
            if isinstance(exc, aiohttp.ConnectionTimeoutError):
                self._fail(pending, ids, errors.UPSTREAM_UNAVAILABLE, "the gateway cannot be reached: connect timeout")
            else:
                self._fail(pending, ids, errors.UPSTREAM_TIMEOUT, "no answer from the gateway in time")
        except (aiohttp.ClientError, OSError) as exc:
            log.warning("POST %s failed: %s", self.endpoint, exc)
            self._fail(
                pending, ids, errors.UPSTREAM_UNAVAILABLE, f"the gateway cannot be reached: {type(exc).__name__}"
            )
        except (SSEParseError, TooLarge) as exc:
            self._fail(pending, ids, errors.UPSTREAM_PROTOCOL_ERROR, f"the gateway's reply broke: {exc}")
        except Exception:  # a bug here must still answer each request
            log.exception("relaying a message failed")
            self._fail(pending, ids, errors.INTERNAL_ERROR, "Internal error in portcullis connect")
        finally:
            if sent is not None:
                sent.set()

    async def _post_once(
        self, raw: bytes, body: Any, token: str | None, pending: set[Any], sent: asyncio.Event | None
    ) -> Outcome:
        headers = self._headers(token, body)
        quick = not pending
        timeout = aiohttp.ClientTimeout(total=SHORT_TIMEOUT if quick else self.request_timeout, connect=CONNECT_TIMEOUT)
        initializing = is_initialize(body)
        async with self.http.post(
            self.endpoint, data=raw, headers=headers, timeout=timeout, trace_request_ctx={"sent": sent}
        ) as resp:
            if resp.status == 401:
                await _drain(resp)
                return Outcome.UNAUTHORIZED
            if resp.status == 404 and "Mcp-Session-Id" in headers and not initializing:
                await _drain(resp)
                return Outcome.SESSION_GONE
            if initializing and resp.status == 200:
                self.session_id = resp.headers.get("Mcp-Session-Id")
                self.protocol_version = None
            if resp.status == 202:
                return Outcome.DONE
            if resp.status == 200 and resp.content_type == "text/event-stream":
                last_id, retry = await self._relay_stream(resp, pending, initializing, until_answered=not quick)
                if pending and last_id is not None:
                    await self._resume(last_id, retry, pending, initializing)
                return Outcome.DONE
            data = await read_limited(resp.content, self.max_line)
            if resp.status == 200:
                self._emit(data, pending, initializing)
                return Outcome.DONE
            self._http_error(resp.status, data, pending)
            return Outcome.DONE

    def _http_error(self, status: int, data: bytes, pending: set[Any]) -> None:
        """A 4xx/5xx: relay the JSON-RPC errors that answer our requests, and describe the rest."""
        message = f"the gateway answered HTTP {status}"
        code = errors.UPSTREAM_UNAVAILABLE if status >= 500 else errors.INVALID_REQUEST
        try:
            body = orjson.loads(data) if data else None
        except orjson.JSONDecodeError:
            body = None
        for m in _members(body):
            if not isinstance(m, dict) or not isinstance(m.get("error"), dict):
                continue
            if _id_key(m.get("id")) in pending:
                self._emit(orjson.dumps(m), pending, False)
            else:
                err = m["error"]
                message = str(err.get("message") or message)
                code = err["code"] if isinstance(err.get("code"), int) else code
        if not pending:
            log.warning("%s: %s", self.endpoint, message)
        for key in list(pending):
            self.out.write(error_line(_id_value(key), code, message))
            pending.discard(key)

    def _fail(self, pending: set[Any], ids: dict[Any, Any], code: int, message: str, data: Any = None) -> None:
        if not pending and not ids:
            log.warning("%s", message)
        for key in list(pending):
            self.out.write(error_line(ids.get(key, _id_value(key)), code, message, data))
        pending.clear()

    def _emit(self, data: bytes, pending: set[Any], initializing: bool) -> None:
        """Write one message from the gateway to stdout (after noting what it answers)."""
        try:
            line, body = one_line(data)
        except ValueError:
            log.warning("dropped a reply that is not JSON (%d bytes)", len(data))
            return
        for m in _members(body):
            if not isinstance(m, dict) or "method" in m:
                continue
            if initializing and isinstance(m.get("result"), dict):
                version = m["result"].get("protocolVersion")
                if isinstance(version, str):
                    self.protocol_version = version
            pending.discard(_id_key(m.get("id")))
        self.out.write(line)

    async def _relay_stream(
        self, resp: aiohttp.ClientResponse, pending: set[Any], initializing: bool, *, until_answered: bool = False
    ) -> tuple[str | None, int | None]:
        """Every event's message to stdout, in order; returns the last event id and retry hint (for resuming).
        ``until_answered``: stop once every pending request has its response (the server ends such a stream then)."""
        parser = SSEParser(max_event=self.max_line)
        last_id: str | None = None
        retry: int | None = None
        async for chunk in resp.content.iter_any():
            for event in parser.feed(chunk):
                if event.id:
                    last_id = event.id
                if event.retry is not None:
                    retry = event.retry
                if event.event not in (None, "message") or not event.data.strip():
                    continue
                self._emit(event.data, pending, initializing)
                if until_answered and not pending:
                    return last_id, retry
        return last_id, retry

    async def _resume(self, last_id: str, retry: int | None, pending: set[Any], initializing: bool) -> None:
        """The stream ended before every request was answered: GET with Last-Event-ID (bounded attempts)."""
        for _ in range(MAX_STREAM_RESUMES):
            if not pending:
                return
            await asyncio.sleep(min((retry or 0) / 1000, 5.0))
            token = await self.tokens.get()
            headers = self._headers(token, accept="text/event-stream", content=False)
            headers["Last-Event-ID"] = last_id
            timeout = aiohttp.ClientTimeout(total=self.request_timeout, connect=CONNECT_TIMEOUT)
            async with self.http.get(self.endpoint, headers=headers, timeout=timeout) as resp:
                if resp.status != 200 or resp.content_type != "text/event-stream":
                    await _drain(resp)
                    log.info("could not resume the stream: HTTP %d", resp.status)
                    return
                new_id, new_retry = await self._relay_stream(resp, pending, initializing, until_answered=True)
            last_id = new_id or last_id
            retry = new_retry if new_retry is not None else retry

    async def _reinitialize(self, failed_sid: str) -> bool:
        """The gateway forgot the session: start a new one with the client's own initialize (its answer is not
        relayed: the client already has one), send notifications/initialized, reopen the GET stream."""
        async with self._reinit_lock:
            if self.session_id != failed_sid:
                return self.session_id is not None  # another message already did it
            if self._init_raw is None or self._reinits >= 3:
                return False
            self._reinits += 1
            log.warning("the gateway ended the session; starting a new one")
            init = orjson.loads(self._init_raw)
            init["id"] = f"portcullis-connect-reinit-{self._reinits}"
            token = await self.tokens.get()
            timeout = aiohttp.ClientTimeout(total=SHORT_TIMEOUT, connect=CONNECT_TIMEOUT)
            headers = {"Accept": ACCEPT_BOTH, "Content-Type": "application/json"}
            if token:
                headers["Authorization"] = f"Bearer {token}"
            async with self.http.post(self.endpoint, data=orjson.dumps(init), headers=headers, timeout=timeout) as resp:
                if resp.status != 200:
                    await _drain(resp)
                    return False
                sid = resp.headers.get("Mcp-Session-Id")
                data = await read_limited(resp.content, self.max_line)
            version = _init_version(data)
            if sid is None or version is None:
                return False
            self.session_id, self.protocol_version = sid, version
            note = orjson.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"})
            async with self.http.post(self.endpoint, data=note, headers=self._headers(token), timeout=timeout) as resp:
                await _drain(resp)
            if self._listener is not None:
                self._listener.cancel()
                self._listener = None
            self._start_listening()
            return True

    # --- the standalone GET stream ---------------------------------------------------------------------------------

    def _start_listening(self) -> None:
        if self._listener is None and self.session_id is not None:
            self._listener = spawn(self._listen(), name="connect-get")

    async def _listen(self) -> None:
        failures = 0
        last_id: str | None = None
        retry: int | None = None
        refreshed = False
        while failures < MAX_LISTEN_FAILURES:
            token = await self.tokens.get()
            headers = self._headers(token, accept="text/event-stream", content=False)
            if last_id is not None:
                headers["Last-Event-ID"] = last_id
            timeout = aiohttp.ClientTimeout(total=None, connect=CONNECT_TIMEOUT, sock_read=LISTEN_IDLE)
            opened = time.monotonic()
            try:
                async with self.http.get(self.endpoint, headers=headers, timeout=timeout) as resp:
                    if resp.status == 405:
                        log.debug("the gateway offers no standalone stream (405)")
                        return
                    if resp.status == 401 and not refreshed:
                        refreshed = True
                        await self.tokens.unauthorized(token)
                        continue
                    if resp.status != 200 or resp.content_type != "text/event-stream":
                        await _drain(resp)
                        log.info("GET stream: HTTP %d", resp.status)
                        if resp.status in (401, 403, 404):
                            return
                        failures += 1
                    else:
                        log.debug("the standalone stream is open")
                        new_id, new_retry = await self._relay_stream(resp, set(), False)
                        last_id = new_id or last_id
                        retry = new_retry if new_retry is not None else retry
                        refreshed = False
                        failures = failures + 1 if time.monotonic() - opened < 1.0 else 0
            except aiohttp.SocketTimeoutError:
                failures = 0  # silent for LISTEN_IDLE: reopen
                continue
            except (aiohttp.ClientError, OSError, SSEParseError) as exc:
                log.info("GET stream: %s", exc or type(exc).__name__)
                failures += 1
            await asyncio.sleep(retry / 1000 if retry is not None else min(0.5 * 2**failures, 30.0))
        log.warning("gave up on the gateway's standalone stream after %d failures", failures)


def _id_key(msg_id: Any) -> Any:
    """A hashable key that keeps 1 and "1" (and True) apart."""
    return (type(msg_id).__name__, msg_id if isinstance(msg_id, str | int | float | None) else repr(msg_id))


def _id_value(key: Any) -> Any:
    return key[1]


def _init_version(data: bytes) -> str | None:
    """The protocolVersion in an initialize answer given as JSON or as SSE."""
    chunks: Iterable[bytes] = [data]
    if data.lstrip().startswith((b"event:", b"id:", b"data:", b":", b"retry:")):
        chunks = [e.data for e in SSEParser().feed(data + b"\n\n")]
    for chunk in chunks:
        try:
            body = orjson.loads(chunk)
        except orjson.JSONDecodeError:
            continue
        result = body.get("result") if isinstance(body, dict) else None
        if isinstance(result, dict) and isinstance(result.get("protocolVersion"), str):
            return str(result["protocolVersion"])
    return None


async def _drain(resp: aiohttp.ClientResponse) -> None:
    with contextlib.suppress(aiohttp.ClientError, TimeoutError):
        await resp.content.read(64 * 1024)


async def _on_chunk_sent(
    _session: aiohttp.ClientSession, ctx: Any, _params: aiohttp.TraceRequestChunkSentParams
) -> None:
    request_ctx = getattr(ctx, "trace_request_ctx", None)
    sent = request_ctx.get("sent") if isinstance(request_ctx, dict) else None
    if isinstance(sent, asyncio.Event):
        sent.set()


def _start_stdin_reader(
    fd: int, max_line: int, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[bytes | Oversize | None]
) -> None:
    """Read stdin on a daemon thread with os.read (works for pipes, ttys and files alike; no buffered-reader lock
    is held at interpreter exit) and hand complete lines to the loop, with backpressure."""

    def put(item: bytes | Oversize | None) -> bool:
        try:
            asyncio.run_coroutine_threadsafe(queue.put(item), loop).result()
        except (RuntimeError, asyncio.CancelledError, concurrent.futures.CancelledError):
            return False  # the loop is gone
        return True

    def read() -> None:
        splitter = LineSplitter(max_line)
        while True:
            try:
                data = os.read(fd, READ_CHUNK)
            except OSError:
                data = b""
            if not data:
                for item in splitter.end():
                    if not put(item):
                        return
                put(None)
                return
            for item in splitter.feed(data):
                if not put(item):
                    return

    threading.Thread(target=read, name="connect-stdin", daemon=True).start()


@click.command("connect")
@click.argument("server")
@click.option("--gateway", required=True, help="the gateway's base URL (the one given to `portcullis login`)")
@click.option("--timeout", "request_timeout", default=600.0, show_default=True, help="seconds a request may take")
@click.option("--max-line", default=DEFAULT_MAX_LINE, show_default=True, help="largest message, in bytes")
@click.option("--log-level", default="warning", type=click.Choice(["debug", "info", "warning", "error"]))
def connect_command(server: str, gateway: str, request_timeout: float, max_line: int, log_level: str) -> None:
    """Serve MCP on stdin/stdout, relayed to SERVER on the gateway with the cached login's token."""
    logging.basicConfig(
        level=getattr(logging, log_level.upper()),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    base = normalize_gateway(gateway)
    cache = TokenCache(config_dir())
    keys = cache_keys(base, server)
    out = Stdout(sys.stdout.buffer)
    relay = Relay(
        base,
        server,
        out,
        lambda http: TokenSource(cache, keys, http),
        request_timeout=request_timeout,
        max_line=max_line,
    )
    code = asyncio.run(relay.run(sys.stdin.fileno()))
    try:
        sys.stdout.flush()
    except (BrokenPipeError, OSError, ValueError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second complaint at interpreter exit
    sys.exit(code)


def register(group: click.Group) -> None:
    """Add ``login`` and ``connect`` to the ``portcullis`` command group."""
    group.add_command(login_command, "login")
    group.add_command(connect_command, "connect")
