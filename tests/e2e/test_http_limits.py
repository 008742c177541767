"""HTTP-level limits as settings (``limits.max_header_bytes``, ``max_headers``, ``keepalive_timeout``): a request
over them is refused before any route runs, and an idle connection is closed; a normal request still works."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator

import pytest

from tests.support.gateway import RunningGateway, running_gateway

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    limits = {"max_header_bytes": 1024, "max_headers": 16, "keepalive_timeout": 1}
    with running_gateway(tmp_path_factory.mktemp("limits"), {}, limits=limits) as gw:
        yield gw


def exchange(gw: RunningGateway, raw: bytes, idle: bool = False) -> bytes:
    """Send ``raw`` on a fresh connection; everything the gateway says until it closes (bounded by a timeout)."""
    host, port = gw.base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(raw)
        got = b""
        while chunk := s.recv(65536):
            got += chunk
            if not idle:
                break
    return got


def request(extra: str = "", keep_alive: bool = False) -> bytes:
    conn = "keep-alive" if keep_alive else "close"
    return f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}Connection: {conn}\r\n\r\n".encode()


async def test_headers_over_the_configured_sizes_are_refused_and_idle_connections_closed(
    gateway: RunningGateway,
) -> None:
    ok = await asyncio.to_thread(exchange, gateway, request())
    assert ok.startswith(b"HTTP/1.1 200")
    too_long = await asyncio.to_thread(exchange, gateway, request(f"X-Pad: {'a' * 2000}\r\n"))
    assert too_long.split(b"\r\n")[0].endswith(b" 400 Bad Request") and b"Got more than 1024 bytes" in too_long
    too_many = await asyncio.to_thread(exchange, gateway, request("".join(f"X-H{i}: v\r\n" for i in range(40))))
    assert too_many.split(b"\r\n")[0].endswith(b" 400 Bad Request") and b"Too many headers" in too_many
    # a kept-alive connection left idle is closed by the gateway (keepalive_timeout 1 s; the read is bounded at 10)
    idle = await asyncio.to_thread(exchange, gateway, request(keep_alive=True), True)
    assert idle.startswith(b"HTTP/1.1 200")  # answered, then closed: recv returned b"" before the 10 s timeout


def dribble(gw: RunningGateway, within: float) -> float | None:
    """A slowloris client: a request head sent one header line at a time, never finished. Seconds until the gateway
    hung up, or None if it still listened after ``within``."""
    host, port = gw.base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=within) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        start = time.monotonic()
        while time.monotonic() - start < within:
            try:
                s.sendall(b"X-Slow: 1\r\n")
            except (BrokenPipeError, ConnectionResetError):
                return time.monotonic() - start
            time.sleep(0.25)  # the attack itself: one line every quarter second (not a wait for a condition)
    return None


async def test_a_client_that_never_finishes_its_headers_is_cut_off(gateway: RunningGateway) -> None:
    cut_after = await asyncio.to_thread(dribble, gateway, 10.0)
    assert cut_after is not None and cut_after < 5.0  # keepalive_timeout (1 s here) bounds the request head too
    assert (await asyncio.to_thread(exchange, gateway, request())).startswith(b"HTTP/1.1 200")
