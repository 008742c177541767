"""Gateway sessions (session era): minted ids mapped to the upstream's, and resumable SSE stream buffers."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from portcullis.upstream.routed import RoutedSession
from portcullis.wire.mcp import Era

MAX_STREAMS = 64  # resumable streams remembered per session


class StreamBuffer:
    """The last ``size`` events of one SSE stream, so that a client can resume with Last-Event-ID.

    Event ids are ``<stream>.<n>``. A stream that is still being fed can be followed after the replay.
    """

    __slots__ = ("_events", "_waiters", "closed", "next_n", "stream_no")

    def __init__(self, stream_no: int, size: int) -> None:
        self.stream_no = stream_no
        self._events: deque[tuple[int, bytes]] = deque(maxlen=size)
        self._waiters: list[asyncio.Future[None]] = []
        self.next_n = 1
        self.closed = False

    def next_id(self) -> str:
        return f"{self.stream_no}.{self.next_n}"

    def append(self, frame: bytes) -> None:
        self._events.append((self.next_n, frame))
        self.next_n += 1
        self._wake()

    def close(self) -> None:
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for w in waiters:
            if not w.done():
                w.set_result(None)

    def after(self, n: int) -> list[tuple[int, bytes]]:
        return [(i, f) for i, f in self._events if i > n]

    def oldest(self) -> int:
        return self._events[0][0] if self._events else self.next_n

    async def wait(self, limit: float) -> None:
        """Until the next event or close, at most ``limit`` seconds."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(fut, limit)


@dataclass(slots=True, eq=False)
class GatewaySession:
    id: str
    server: str
    era: Era
    owner: str = ""  # the caller key that created it; another caller presenting it is refused
    caller: Any = None  # identity.edge.Caller that created it (server-initiated flows act for it)
    protocol_version: str | None = None
    upstream_session: str | None = None
    channel: RoutedSession | None = None  # stdio child or legacy SSE connection of this session
    created: float = field(default_factory=time.monotonic)
    last_seen: float = field(default_factory=time.monotonic)
    streams: dict[int, StreamBuffer] = field(default_factory=dict)
    stream_seq: int = 0
    established: bool = False
    get_stream_open: bool = False
    buffer_size: int = 256
    # a session-era client in front of a 2026-07-28-only upstream: the gateway keeps the session itself
    to_stateless: bool = False
    inflight: dict[object, Any] = field(default_factory=dict)  # request key -> the job relaying its reply
    init_params: dict[str, Any] = field(default_factory=dict)
    log_level: str | None = None

    def new_stream(self) -> StreamBuffer:
        self.stream_seq += 1
        buf = StreamBuffer(self.stream_seq, self.buffer_size)
        self.streams[self.stream_seq] = buf
        # keep the number of remembered streams bounded: drop the oldest closed ones (open ones are in use)
        if len(self.streams) > MAX_STREAMS:
            for no in [n for n, b in self.streams.items() if b.closed][: len(self.streams) - MAX_STREAMS]:
                del self.streams[no]
        return buf


def mint_session_id() -> str:
    return secrets.token_urlsafe(24)


class SessionTable:
    def __init__(self, max_sessions: int) -> None:
        self._by_id: dict[str, GatewaySession] = {}
        self._per_owner: dict[str, int] = {}  # caller key -> open sessions (limits.sessions_per_principal)
        self.max_sessions = max_sessions

    def get(self, sid: str) -> GatewaySession | None:
        s = self._by_id.get(sid)
        if s is not None:
            s.last_seen = time.monotonic()
        return s

    def add(self, s: GatewaySession) -> None:
        if s.id not in self._by_id:
            self._per_owner[s.owner] = self._per_owner.get(s.owner, 0) + 1
        self._by_id[s.id] = s

    def pop(self, sid: str) -> GatewaySession | None:
        s = self._by_id.pop(sid, None)
        if s is not None:
            n = self._per_owner.get(s.owner, 1) - 1
            if n > 0:
                self._per_owner[s.owner] = n
            else:
                self._per_owner.pop(s.owner, None)
        return s

    def owned_by(self, owner: str) -> int:
        """Open sessions of one caller on this replica."""
        return self._per_owner.get(owner, 0)

    def __len__(self) -> int:
        return len(self._by_id)

    def __contains__(self, sid: object) -> bool:
        return sid in self._by_id

    def all(self) -> list[GatewaySession]:
        return list(self._by_id.values())

    def idle(self, older_than: float) -> list[GatewaySession]:
        cutoff = time.monotonic() - older_than
        return [s for s in self._by_id.values() if s.last_seen < cutoff]
