"""``portcullis agent``: runs beside MCP servers that must not be exposed, dials out to the gateway, and carries the
gateway's exchanges with them. It accepts no inbound connection; the servers' secrets stay here.

One WebSocket to the gateway (:mod:`portcullis.tunnel.mux` frames), kept alive with pings; lost, it is dialled
again with exponential backoff and jitter. Each stream the gateway opens is one HTTP exchange with a local server:
the request goes out with the agent's own headers for that server, the response (JSON or an SSE stream) comes back
chunk by chunk under the stream's flow control; a reset from the gateway (the caller cancelled or went away) closes
the local request, which is how a 2026-07-28 server learns of the cancellation. Policy, masking, approvals and the
record all stay on the gateway: the agent only transports.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import yarl

from portcullis import __version__
from portcullis.config.model import AgentConfig, AgentServerConfig
from portcullis.tunnel.mux import MAX_FRAME, Mux, Stream, TunnelError
from portcullis.tunnel.stdio import serve_stdio
from portcullis.upstream import h1

log = logging.getLogger("portcullis.agent")

HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-authorization", "host"}
)
REFUSED = {4401: "token revoked", 4403: "not allowed to serve these servers", 4400: "the gateway refused the hello"}


def _secret_headers(cfg: AgentServerConfig) -> dict[str, str]:
    h = dict(cfg.headers)
    for name, env in cfg.headers_from_env.items():
        value = os.environ.get(env)
        if value is None:
            raise ValueError(f"environment variable {env} (header {name}) is not set")
        h[name] = value
    for name, path in cfg.headers_from_file.items():
        h[name] = Path(path).read_text(encoding="utf-8").strip()
    return h


def read_token(cfg: AgentConfig) -> str:
    if cfg.token_file is not None:
        return Path(cfg.token_file).read_text(encoding="utf-8").strip()
    token = os.environ.get(cfg.token_env or "", "")
    if not token:
        raise ValueError(f"no agent token: set {cfg.token_env} or token_file (portcullis agents create)")
    return token


class Agent:
    def __init__(self, cfg: AgentConfig, token: str) -> None:
        self.cfg = cfg
        self._token = token
        self._secrets = {name: _secret_headers(s) for name, s in cfg.servers.items()}  # read once, at start
        url = cfg.gateway
        self.url = "ws" + url[4:] if url.startswith("http") else url
        self.http: aiohttp.ClientSession | None = None  # https servers, and the tunnel itself
        self.pool: h1.Pool | None = None  # http:// servers
        self.connected = asyncio.Event()
        self.connections = 0
        self.exchanges = 0  # with local servers, since start
        self.failures = 0  # local server unreachable or its response broken off

    async def run(self) -> None:
        """Forever: connect, serve, and when the tunnel drops, dial again with backoff (and jitter)."""
        backoff = 0.25
        self.pool = h1.Pool(limit_per_host=0, keepalive_timeout=60.0)
        async with aiohttp.ClientSession(auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar()) as http:
            self.http = http
            while True:
                code = await self._once(http)
                if code is not None and code in REFUSED:
                    log.error("the gateway refused this agent: %s", REFUSED[code])
                    backoff = max(backoff, self.cfg.reconnect_max / 2)
                elif self.connected.is_set():
                    backoff = 0.25  # it was up: start over
                self.connected.clear()
                delay = backoff * random.uniform(0.5, 1.5)
                log.info("reconnecting in %.2f s", delay)
                await asyncio.sleep(delay)
                backoff = min(backoff * 2, self.cfg.reconnect_max)

    async def _once(self, http: aiohttp.ClientSession) -> int | None:
        headers = {"Authorization": f"Bearer {self._token}", "User-Agent": f"portcullis-agent/{__version__}"}
        try:
            ws = await http.ws_connect(
                self.url, headers=headers, heartbeat=self.cfg.heartbeat, max_msg_size=8 * 1024 * 1024
            )
        except aiohttp.WSServerHandshakeError as exc:
            log.error("the gateway refused the connection: HTTP %s", exc.status)
            return 4401 if exc.status in (401, 403) else None
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            log.warning("cannot reach the gateway: %s", type(exc).__name__)
            return None
        mux = Mux(ws, on_open=self._serve)
        reason = "closed"
        reporter = asyncio.ensure_future(self._report(mux))
        try:
            await ws.send_json({"type": "hello", "version": __version__, "servers": sorted(self.cfg.servers)})
            async for msg in ws:
                if msg.type is aiohttp.WSMsgType.BINARY:
                    mux.feed(msg.data)
                elif msg.type is aiohttp.WSMsgType.TEXT:
                    if not self.connected.is_set():
                        self.connected.set()
                        self.connections += 1
                        log.info("connected to the gateway; serving %s", ", ".join(sorted(self.cfg.servers)))
                elif msg.type is aiohttp.WSMsgType.ERROR:
                    reason = f"error ({type(ws.exception()).__name__})"
                    break
        except TunnelError as exc:
            reason = f"protocol error: {exc}"
        except (aiohttp.ClientError, ConnectionError) as exc:
            reason = type(exc).__name__
        finally:
            reporter.cancel()
            mux.close(reason)
            with contextlib.suppress(Exception):
                await ws.close()
        log.warning("tunnel closed: %s (code %s)", reason, ws.close_code)
        return ws.close_code

    async def _report(self, mux: Mux) -> None:
        """The agent's own figures, to the gateway every heartbeat (it exposes them: the agent listens nowhere)."""
        while True:
            await asyncio.sleep(self.cfg.heartbeat)
            with contextlib.suppress(Exception):
                await mux.control({"type": "stats", "exchanges": self.exchanges, "failures": self.failures})

    async def _serve(self, stream: Stream, head: dict[str, Any]) -> None:
        """One exchange: the gateway's request to a local server, its response back. A reset from the gateway
        cancels this task, which drops the local request (that is the cancellation the server sees)."""
        name = str(head.get("server"))
        local = self.cfg.servers.get(name)
        if local is None:
            await stream.reset(f"this agent does not serve {name!r}")
            return
        if local.command is not None:
            if head.get("kind") != "stdio":
                await stream.reset(f"{name!r} is a stdio server here; the gateway must say transport: stdio")
                return
            stream.on_reset = _canceller()
            await serve_stdio(stream, name, local, self.cfg.max_body_bytes)
            return
        if head.get("kind") == "stdio":
            await stream.reset(f"{name!r} is an HTTP server here, not stdio")
            return
        body = await stream.read_all(self.cfg.max_body_bytes)
        sent = {k: v for k, v in (head.get("headers") or {}).items() if k.lower() not in HOP_BY_HOP}
        sent.update(self._secrets[name])  # the server's secrets are the agent's
        stream.on_reset = _canceller()
        answered = False
        self.exchanges += 1
        try:
            resp = await self._request(str(head.get("method", "POST")), local, sent, body)
            try:
                out = {str(k): v for k, v in resp.headers.items() if k.lower() not in HOP_BY_HOP}
                length = resp.content_length
                streaming = str(resp.headers.get("Content-Type", "")).startswith("text/event-stream")
                if not streaming and length is not None and length <= MAX_FRAME:
                    data = await resp.read(MAX_FRAME)
                    answered = True
                    await stream.send_whole({"status": resp.status, "headers": out}, data)  # one frame back
                    return
                await stream.send_head({"status": resp.status, "headers": out})
                answered = True
                async for chunk in resp.iter_chunks():
                    await stream.write(chunk)
                await stream.end()
            finally:
                resp.release()  # back to the pool when read to its end; closed if cut off mid-body
        except (aiohttp.ClientError, h1.H1Error, TimeoutError, OSError) as exc:
            self.failures += 1
            what = "the server's response broke off" if answered else "the agent cannot reach the server"
            await stream.reset(f"{what} ({type(exc).__name__})")

    async def _request(
        self, method: str, local: AgentServerConfig, headers: dict[str, str], body: bytes
    ) -> h1.Response | _AioResponse:
        assert local.url is not None
        url = yarl.URL(local.url)
        if url.scheme == "http":  # the gateway's own HTTP/1.1 client: a third of aiohttp's CPU per exchange
            assert self.pool is not None
            return await self.pool.request(
                method,
                url,
                headers,
                body or None,
                connect_timeout=local.connect_timeout,
                read_timeout=local.call_timeout,
            )
        assert self.http is not None
        timeout = aiohttp.ClientTimeout(total=None, connect=local.connect_timeout, sock_read=local.call_timeout)
        r = await self.http.request(
            method, url, data=body or None, headers=headers, timeout=timeout, allow_redirects=False
        )
        return _AioResponse(r)


class _AioResponse:
    """aiohttp's response with the reading interface of :class:`h1.Response` (https servers)."""

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self._r = resp
        self.status = resp.status
        self.headers = resp.headers
        self.content_length = resp.content_length

    async def read(self, limit: int) -> bytes:
        data = await self._r.content.read(limit + 1)
        if len(data) > limit:
            raise h1.TooLarge("body larger than the limit")
        return data

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        async for chunk in self._r.content.iter_any():
            yield chunk

    def release(self) -> None:
        self._r.release()


def _canceller() -> Callable[[], None]:
    task = asyncio.current_task()
    assert task is not None

    def cancel() -> None:
        task.cancel()

    return cancel


async def run_agent(cfg: AgentConfig) -> None:
    await Agent(cfg, read_token(cfg)).run()
