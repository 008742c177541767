"""Legacy HTTP+SSE upstream (protocol 2024-11-05): one GET stream per session, POSTs to the endpoint it names.

The gateway opens the stream, waits (bounded) for the ``endpoint`` event, checks that the endpoint stays on the
upstream's origin (no redirect of the gateway's traffic elsewhere), and then routes the stream's messages like a
stdio child's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from urllib.parse import urljoin, urlsplit

import aiohttp

from portcullis import errors
from portcullis.config.model import ServerConfig
from portcullis.tasks import spawn
from portcullis.upstream.netguard import why_unreachable
from portcullis.upstream.routed import STOPPED, RestartGate, RoutedSession
from portcullis.wire import sse
from portcullis.wire.jsonrpc import parse_one

log = logging.getLogger("portcullis.upstream.sse")


class LegacySseSession(RoutedSession):
    what = "connection"

    def __init__(
        self, name: str, cfg: ServerConfig, http: aiohttp.ClientSession, max_event: int, gate: RestartGate | None = None
    ) -> None:
        assert cfg.url is not None
        super().__init__(name, cfg, gate)
        self._http = http
        self._max_event = max_event
        self._resp: aiohttp.ClientResponse | None = None
        self._endpoint: str | None = None
        self._timeout = aiohttp.ClientTimeout(total=None, connect=cfg.connect_timeout, sock_read=None)

    async def start(self) -> None:
        if self.gate is not None:
            self.gate.check(self.name)
        url = self.cfg.url
        assert url is not None
        try:
            resp = await self._http.get(
                url, headers={"Accept": "text/event-stream", **self.cfg.headers}, timeout=self._timeout
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            if self.gate is not None:
                self.gate.failed()
            raise errors.UpstreamError(
                errors.UPSTREAM_UNAVAILABLE, f"upstream {self.name!r} is unreachable ({why_unreachable(exc)})"
            ) from exc
        if resp.status != 200 or not resp.headers.get("Content-Type", "").startswith("text/event-stream"):
            resp.close()
            raise errors.UpstreamError(
                errors.UPSTREAM_PROTOCOL_ERROR, f"upstream {self.name!r} answered the SSE GET with HTTP {resp.status}"
            )
        self._resp = resp
        got_endpoint: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._tasks.append(spawn(self._read(resp, got_endpoint), name=f"sse-{self.name}"))
        try:
            endpoint = await asyncio.wait_for(asyncio.shield(got_endpoint), self.cfg.startup_timeout)
        except TimeoutError:
            await self.close()
            raise errors.UpstreamError(
                errors.UPSTREAM_TIMEOUT, f"upstream {self.name!r} sent no endpoint event in time"
            ) from None
        except errors.UpstreamError:
            await self.close()
            raise
        full = urljoin(url, endpoint)
        a, b = urlsplit(url), urlsplit(full)
        if (a.scheme, a.netloc) != (b.scheme, b.netloc):
            await self.close()
            raise errors.UpstreamError(
                errors.UPSTREAM_PROTOCOL_ERROR, f"upstream {self.name!r} named an endpoint on another origin"
            )
        self._endpoint = full

    async def _read(self, resp: aiohttp.ClientResponse, got_endpoint: asyncio.Future[str]) -> None:
        parser = sse.SSEParser(self._max_event)
        reason = "closed its stream"
        try:
            async for chunk in resp.content.iter_any():
                for ev in parser.feed(chunk):
                    if ev.event == "endpoint":
                        if not got_endpoint.done():
                            got_endpoint.set_result(ev.data.decode("utf-8", "replace").strip())
                        continue
                    if ev.event not in (None, "message") or not ev.data.strip():
                        continue
                    try:
                        self._route(parse_one(ev.data))
                    except errors.ProtocolError:
                        log.warning("upstream %r sent an SSE event that is not JSON-RPC; ignored", self.name)
        except sse.SSEParseError:
            reason = "sent an SSE event larger than the limit"
        except (aiohttp.ClientError, TimeoutError):
            reason = "broke its stream"
        finally:
            if not got_endpoint.done():
                got_endpoint.set_exception(
                    errors.UpstreamError(errors.UPSTREAM_PROTOCOL_ERROR, f"upstream {self.name!r} {reason}")
                )
            self._die(reason)

    async def _write(self, raw: bytes) -> None:
        if self.dead is not None or self._endpoint is None:
            raise self._gone()
        try:
            async with self._http.post(
                self._endpoint,
                data=raw,
                headers={"Content-Type": "application/json", **self.cfg.headers},
                timeout=aiohttp.ClientTimeout(total=self.cfg.call_timeout, connect=self.cfg.connect_timeout),
            ) as r:
                await r.read()
                status = r.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise errors.UpstreamError(
                errors.UPSTREAM_UNAVAILABLE, f"upstream {self.name!r} refused a message ({type(exc).__name__})"
            ) from exc
        if status >= 300:
            raise errors.UpstreamError(
                errors.UPSTREAM_PROTOCOL_ERROR, f"upstream {self.name!r} answered a message with HTTP {status}"
            )

    async def close(self) -> None:
        self._die(STOPPED)
        if self._resp is not None:
            with contextlib.suppress(Exception):
                self._resp.close()
        await self._stop_tasks()
