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
from pathlib import Path
from typing import Any

import aiohttp

from portcullis import __version__
from portcullis.config.model import AgentConfig, AgentServerConfig
from portcullis.tunnel.mux import Mux, Stream, TunnelError

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
        self.http: aiohttp.ClientSession | None = None
        self.connected = asyncio.Event()
        self.connections = 0

    async def run(self) -> None:
        """Forever: connect, serve, and when the tunnel drops, dial again with backoff (and jitter)."""
        backoff = 0.25
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
            mux.close(reason)
            with contextlib.suppress(Exception):
                await ws.close()
        log.warning("tunnel closed: %s (code %s)", reason, ws.close_code)
        return ws.close_code

    async def _serve(self, stream: Stream, head: dict[str, Any]) -> None:
        """One exchange: the gateway's request to a local server, its response back, chunk by chunk."""
        assert self.http is not None
        name = str(head.get("server"))
        local = self.cfg.servers.get(name)
        if local is None:
            await stream.reset(f"this agent does not serve {name!r}")
            return
        body = await stream.read_all(self.cfg.max_body_bytes)
        sent = {k: v for k, v in (head.get("headers") or {}).items() if k.lower() not in HOP_BY_HOP}
        sent.update(self._secrets[name])  # the server's secrets are the agent's
        timeout = aiohttp.ClientTimeout(total=None, connect=local.connect_timeout, sock_read=local.call_timeout)
        pump = asyncio.ensure_future(
            self._exchange(stream, str(head.get("method", "POST")), local, sent, body, timeout)
        )
        reset = asyncio.ensure_future(stream.reset_event.wait())
        try:
            await asyncio.wait({pump, reset}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (pump, reset):
                t.cancel()
            with contextlib.suppress(asyncio.CancelledError, TunnelError):
                await pump

    async def _exchange(
        self,
        stream: Stream,
        method: str,
        local: AgentServerConfig,
        headers: dict[str, str],
        body: bytes,
        limits: aiohttp.ClientTimeout,
    ) -> None:
        assert self.http is not None
        answered = False
        try:
            async with self.http.request(
                method, local.url, data=body or None, headers=headers, timeout=limits, allow_redirects=False
            ) as resp:
                out = {str(k): v for k, v in resp.headers.items() if k.lower() not in HOP_BY_HOP}
                await stream.send_head({"status": resp.status, "headers": out})
                answered = True
                async for chunk in resp.content.iter_any():
                    await stream.write(chunk)
                await stream.end()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            if answered:
                await stream.reset(f"the server's response broke off ({type(exc).__name__})")
            else:
                await stream.reset(f"the agent cannot reach the server ({type(exc).__name__})")


async def run_agent(cfg: AgentConfig) -> None:
    await Agent(cfg, read_token(cfg)).run()
