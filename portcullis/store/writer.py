"""Group commit: records from many flows are written by one thread in batches, one transaction per batch.

``submit`` returns a future that resolves when the batch holding the records has committed (or fails with
StoreError). The edge awaits it before releasing a response (durability mode ``commit``), so a response a client
received always has its record. One wake-up of the event loop per batch keeps the per-record cost low.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, insert, update

from portcullis.errors import StoreError
from portcullis.flow import Record
from portcullis.store.schema import records, sessions

log = logging.getLogger("portcullis.store")

_STOP = object()


@dataclass(slots=True)
class SessionOpen:
    id: str
    server: str
    era: str
    protocol_version: str | None
    client_info: str | None
    principal: str | None
    upstream_session: str | None
    created_ns: int


@dataclass(slots=True)
class SessionEnd:
    id: str
    ended_ns: int
    reason: str


Item = Record | SessionOpen | SessionEnd


class StoreWriter:
    def __init__(
        self, engine: Engine, *, max_batch: int = 2048, on_failure: Callable[[BaseException], None] | None = None
    ) -> None:
        self._engine = engine
        self._q: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._max_batch = max_batch
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._on_failure = on_failure
        self.healthy = True
        self.batches = 0
        self.written = 0
        self.failures = 0

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._thread = threading.Thread(target=self._run, name="portcullis-store-writer", daemon=True)
        self._thread.start()

    def submit(self, items: list[Item], wait: bool = True) -> asyncio.Future[None] | None:
        fut: asyncio.Future[None] | None = None
        if wait:
            assert self._loop is not None
            fut = self._loop.create_future()
        self._q.put((items, fut))
        return fut

    async def write(self, items: list[Item]) -> None:
        fut = self.submit(items, wait=True)
        assert fut is not None
        await fut

    def close(self, timeout: float = 10.0) -> None:
        if self._thread is None:
            return
        self._q.put(_STOP)
        self._thread.join(timeout)
        self._thread = None

    # --- the writer thread -------------------------------------------------------------------------------------

    def _run(self) -> None:
        stop = False
        while not stop:
            first = self._q.get()
            if first is _STOP:
                break
            batch = [first]
            while len(batch) < self._max_batch:
                try:
                    nxt = self._q.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stop = True
                    break
                batch.append(nxt)
            self._commit(batch)

    def _commit(self, batch: list[tuple[list[Item], asyncio.Future[None] | None]]) -> None:
        recs: list[dict[str, Any]] = []
        opens: list[dict[str, Any]] = []
        ends: list[SessionEnd] = []
        for items, _fut in batch:
            for it in items:
                if isinstance(it, Record):
                    recs.append(
                        {
                            "ts_ns": it.ts_ns,
                            "server": it.server,
                            "session_id": it.session_id,
                            "direction": it.direction,
                            "kind": it.kind,
                            "method": it.method,
                            "msg_id": it.msg_id,
                            "flow_id": it.flow_id,
                            "outcome": it.outcome,
                            "latency_us": it.latency_us,
                            "detail": it.detail,
                            "principal": it.principal,
                            "payload": it.payload,
                        }
                    )
                elif isinstance(it, SessionOpen):
                    opens.append(
                        {
                            "id": it.id,
                            "server": it.server,
                            "era": it.era,
                            "protocol_version": it.protocol_version,
                            "client_info": it.client_info,
                            "principal": it.principal,
                            "upstream_session": it.upstream_session,
                            "created_ns": it.created_ns,
                        }
                    )
                else:
                    ends.append(it)
        exc: BaseException | None = None
        for attempt in range(3):
            try:
                with self._engine.begin() as conn:
                    if opens:
                        conn.execute(insert(sessions), opens)
                    if recs:
                        conn.execute(insert(records), recs)
                    for e in ends:
                        conn.execute(
                            update(sessions)
                            .where(sessions.c.id == e.id, sessions.c.ended_ns.is_(None))
                            .values(ended_ns=e.ended_ns, end_reason=e.reason)
                        )
                exc = None
                break
            except Exception as e:  # the store failed: every waiter of this batch is refused
                exc = e
                if attempt < 2:
                    time.sleep(0.01 * (attempt + 1))
        if exc is None:
            self.batches += 1
            self.written += len(recs)
            if not self.healthy:
                log.warning("recording store recovered")
            self.healthy = True
        else:
            self.failures += 1
            if self.healthy:
                log.error("recording store write failed: %s", type(exc).__name__)
            self.healthy = False
            if self._on_failure is not None:
                with contextlib.suppress(Exception):
                    self._on_failure(exc)
        futs = [f for _i, f in batch if f is not None]
        if futs and self._loop is not None and not self._loop.is_closed():
            err = None if exc is None else StoreError(f"recording store unavailable ({type(exc).__name__})")
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(_resolve, futs, err)


def _resolve(futs: list[asyncio.Future[None]], err: StoreError | None) -> None:
    for f in futs:
        if f.done():
            continue
        if err is None:
            f.set_result(None)
        else:
            f.set_exception(err)
