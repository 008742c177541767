"""The tunnel's multiplexer on an in-memory socket pair: streams carry bodies both ways, a consumer that does not
read holds up only its own stream (flow control), a peer that ignores its window is reset, and a lost connection
fails every stream at once."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from portcullis.tunnel.mux import OPEN, WINDOW_SIZE, Mux, Stream, TunnelError


class Pipe:
    """One direction of a socket: frames sent here are fed to the peer's mux by a pump task."""

    def __init__(self) -> None:
        self.q: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self.sent = 0

    async def send_bytes(self, data: bytes) -> None:
        self.sent += len(data)
        await self.q.put(("b", data))

    async def send_str(self, data: str) -> None:
        await self.q.put(("s", data))


async def pump(pipe: Pipe, to: Mux) -> None:
    while True:
        kind, data = await pipe.q.get()
        if kind == "b":
            to.feed(data)
        else:
            to.control_message(data)


async def echo_upper(stream: Stream, head: dict[str, Any]) -> None:
    """The agent's side in these tests: answers with the request body upper-cased, or streams ``head["n"]`` bytes."""
    body = await stream.read_all(10 * WINDOW_SIZE)
    await stream.send_head({"status": 200, "headers": {"x": head.get("tag", "")}})
    if "n" in head:
        await stream.write(b"z" * head["n"])
    else:
        await stream.write(body.upper())
    await stream.end()


@pytest.fixture
async def pair() -> Any:
    a_out, b_out = Pipe(), Pipe()
    gateway = Mux(a_out)
    agent = Mux(b_out, on_open=echo_upper)
    tasks = [asyncio.ensure_future(pump(a_out, agent)), asyncio.ensure_future(pump(b_out, gateway))]
    yield gateway, agent, a_out, b_out
    for t in tasks:
        t.cancel()
    gateway.close("test over")
    agent.close("test over")


async def request(gateway: Mux, head: dict[str, Any], body: bytes = b"") -> tuple[dict[str, Any], Stream]:
    s = gateway.open()
    await s.send_head(head, OPEN)
    if body:
        await s.write(body)
    await s.end()
    return await asyncio.wait_for(s.head_waiter, 5), s


async def test_bodies_both_ways_larger_than_a_window(pair: Any) -> None:
    gateway, _agent, _a, _b = pair
    body = bytes(range(256)) * (3 * WINDOW_SIZE // 256)  # three windows: credit must be granted along the way
    head, s = await request(gateway, {"tag": "t1"}, body)
    assert head == {"status": 200, "headers": {"x": "t1"}}
    assert await s.read_all(10 * WINDOW_SIZE) == body.upper()
    assert not gateway.streams  # both ends finished: the stream is forgotten


async def test_a_consumer_that_does_not_read_holds_up_only_its_own_stream(pair: Any) -> None:
    gateway, _agent, _a, _b = pair
    _head, stuck = await request(gateway, {"n": 4 * WINDOW_SIZE})  # nobody reads this one
    for i in range(20):  # meanwhile other streams flow freely
        head, s = await request(gateway, {"tag": str(i)}, b"abc")
        assert head["headers"]["x"] == str(i) and await s.read_all(100) == b"ABC"
    assert stuck._inbox_bytes <= WINDOW_SIZE  # the stuck stream buffered at most one window
    assert await stuck.read_all(10 * WINDOW_SIZE) == b"z" * (4 * WINDOW_SIZE)  # and resumes when read


async def test_a_peer_beyond_its_window_is_reset(pair: Any) -> None:
    gateway, _agent, _a, _b = pair
    s = gateway.open()
    s._on_data(b"x" * WINDOW_SIZE)
    s._on_data(b"y")  # one byte more than was granted
    await asyncio.sleep(0)
    assert s.reset_reason is not None and "flow control" in s.reset_reason
    with pytest.raises(TunnelError):
        await s.read()


async def test_a_reset_reaches_the_other_side(pair: Any) -> None:
    gateway, agent, _a, _b = pair
    seen: list[str] = []
    started, told = asyncio.Event(), asyncio.Event()

    async def slow(stream: Stream, head: dict[str, Any]) -> None:
        await stream.send_head({"status": 200, "headers": {}})
        started.set()
        await stream.reset_event.wait()
        seen.append(stream.reset_reason or "")
        told.set()

    agent._on_open = slow
    s = gateway.open()
    await s.send_head({}, OPEN)
    await asyncio.wait_for(s.head_waiter, 5)
    await asyncio.wait_for(started.wait(), 5)
    await s.reset("the caller cancelled")

    await asyncio.wait_for(told.wait(), 5)
    assert seen == ["the caller cancelled"]


async def test_a_lost_tunnel_fails_every_stream_at_once(pair: Any) -> None:
    gateway, agent, _a, _b = pair

    async def never(stream: Stream, head: dict[str, Any]) -> None:
        await asyncio.Event().wait()

    agent._on_open = never
    streams = [gateway.open() for _ in range(5)]
    for s in streams:
        await s.send_head({}, OPEN)
    gateway.close("connection reset")
    for s in streams:
        with pytest.raises(TunnelError, match="tunnel lost: connection reset"):
            await asyncio.wait_for(s.head_waiter, 1)
    with pytest.raises(TunnelError):
        gateway.open()
