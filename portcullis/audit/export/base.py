"""One export destination: a bounded buffer the writer thread fills, and a thread of its own that delivers it.

What a :class:`Sink` promises (the subclasses only say how a batch is delivered, in :meth:`Sink.deliver`):

- :meth:`Sink.offer` (the store writer's thread) takes a lock and appends: it never waits on the destination and
  never encodes. A full buffer drops its *oldest* items, counted as ``dropped``.
- Batches go out in commit order. A batch leaves the buffer only when ``deliver`` returned (the destination
  acknowledged it); an exception is a failed attempt (``failures``), retried after an exponential backoff capped at
  ``retry_max``, for as long as it takes; :class:`Refused` (a destination that will never take this batch) drops it,
  counted. Delivery is therefore at least once.
- :meth:`Sink.close` delivers what it can until a deadline, then counts what is left as ``dropped``.
- Counters and ``last_error`` are read under the same lock. ``last_error`` is an exception's type name, or for the
  two exceptions below their message, which is only ever an HTTP status: never a URL, a header or a payload.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import Any, Literal

from portcullis.audit.codec import checkpoint_json, record_json

log = logging.getLogger("portcullis.audit.export")

Item = tuple[Literal["record", "checkpoint"], Any]  # a committed Record, or a signed Checkpoint
FIRST_BACKOFF = 0.1  # seconds before the first retry; doubled each failed attempt up to retry_max
LOG_EVERY = 100  # a failing destination is logged on its first failed attempt and every LOG_EVERY after


class Refused(Exception):
    """The destination refused the batch for good (e.g. HTTP 400): it is dropped and counted, not retried."""


class Unavailable(Exception):
    """The destination answered with a status worth retrying (5xx, 408, 429, an unfollowed redirect)."""


def encode(item: Item) -> dict[str, Any]:
    """The one JSON form (:mod:`portcullis.audit.codec`) of a buffered item."""
    kind, obj = item
    return record_json(obj) if kind == "record" else checkpoint_json(obj)


def count_records(items: Sequence[Item]) -> int:
    """What the counters count: records (checkpoints travel along but are not counted)."""
    return sum(1 for kind, _ in items if kind == "record")


def describe(exc: BaseException) -> str:
    """What may be shown of a failure: our own status-only messages, else the type name."""
    return str(exc) if isinstance(exc, Refused | Unavailable) else type(exc).__name__


class Sink:
    """One destination: a bounded buffer and a daemon thread that delivers it in batches."""

    kind = "sink"

    def __init__(self, name: str, buffer: int, batch: int, retry_max: float, checkpoints: bool) -> None:
        self.name = name
        self.capacity = buffer
        self.batch = batch
        self.retry_max = retry_max
        self.checkpoints = checkpoints
        self._q: deque[Item] = deque()
        self._inflight: list[Item] = []  # the batch being delivered (still counted as pending)
        self._cond = threading.Condition()
        self._stop = False  # close() was called: deliver what is left until the deadline
        self._abandoned = False  # close() gave up: the leftovers are counted, the thread must not count them again
        self._deadline = 0.0
        self._thread: threading.Thread | None = None
        self.delivered = 0
        self.dropped = 0
        self.failures = 0
        self.last_error: str | None = None

    # --- the writer's thread: a lock and an append, nothing else ---

    def offer(self, items: Sequence[Item]) -> None:
        with self._cond:
            if self._abandoned:  # after close (the writer closes first, so this is a late straggler)
                self.dropped += count_records(items)
                return
            for it in items:
                if it[0] == "checkpoint" and not self.checkpoints:
                    continue
                if len(self._q) >= self.capacity and self._q.popleft()[0] == "record":  # the oldest goes
                    self.dropped += 1
                self._q.append(it)
            self._cond.notify()

    # --- the sink's thread ---

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"portcullis-export-{self.name}", daemon=True)
        self._thread.start()

    def deliver(self, items: list[Item]) -> int:
        """Deliver one batch; return how many of its records the destination acknowledged but rejected (OTLP
        partial success). Raise :class:`Refused` to drop the batch, anything else to retry it."""
        raise NotImplementedError

    def _run(self) -> None:
        backoff = min(FIRST_BACKOFF, self.retry_max)
        streak = 0  # failed attempts since the last success
        while True:
            with self._cond:
                while not self._inflight and not self._q and not self._stop:
                    self._cond.wait()
                if self._abandoned:
                    return
                if not self._inflight:
                    if not self._q:  # stopping, and everything went out
                        return
                    self._inflight = [self._q.popleft() for _ in range(min(self.batch, len(self._q)))]
                batch = self._inflight
            try:
                rejected = self.deliver(batch)
            except Refused as exc:
                self._settle(batch, refused=True, why=describe(exc))
                log.warning("audit export %s: a batch was refused for good (%s); dropped", self.name, describe(exc))
            except Exception as exc:
                streak += 1
                with self._cond:
                    self.failures += 1
                    self.last_error = describe(exc)
                    if self._stop and time.monotonic() >= self._deadline:
                        return
                if streak == 1 or streak % LOG_EVERY == 0:
                    log.warning(
                        "audit export %s: delivery failed (%s, %d attempts so far); retrying",
                        self.name,
                        describe(exc),
                        streak,
                    )
                self._pause(backoff)
                backoff = min(backoff * 2, self.retry_max)
                continue
            else:
                self._settle(batch, rejected=rejected)
                if rejected:
                    log.warning("audit export %s: the destination rejected %d records", self.name, rejected)
            if streak:
                log.info("audit export %s: delivering again after %d failed attempts", self.name, streak)
            streak = 0
            backoff = min(FIRST_BACKOFF, self.retry_max)

    def _settle(self, batch: list[Item], rejected: int = 0, refused: bool = False, why: str | None = None) -> None:
        """The batch is done with: delivered (less what was rejected) or refused. ``batch`` holds what is still
        uncounted (a JSON-lines sink counts its lines as they are written)."""
        with self._cond:
            if self._abandoned:  # close() counted it already
                return
            n = count_records(batch)
            if refused:
                self.failures += 1
                self.dropped += n
                self.last_error = why
            else:
                rejected = min(max(rejected, 0), n)
                self.delivered += n - rejected
                self.dropped += rejected
                if rejected:
                    self.last_error = f"partial success: {rejected} rejected"
            if self._inflight is batch:
                self._inflight = []

    def _written(self, items: Sequence[Item]) -> None:
        """Part of the in-flight batch is delivered for good (the caller removes it from the batch)."""
        with self._cond:
            if not self._abandoned:
                self.delivered += count_records(items)

    def _pause(self, seconds: float) -> None:
        """Wait before the next attempt. New records do not cut it short; close() does, once (one last try now),
        and after that the pause ends at close's deadline."""
        with self._cond:
            stopping = self._stop
            until = time.monotonic() + seconds
            while True:
                end = min(until, self._deadline) if self._stop else until
                left = end - time.monotonic()
                if left <= 0 or (self._stop and not stopping):
                    return
                self._cond.wait(left)

    # --- the closing thread ---

    def request_stop(self, deadline: float) -> None:
        """Deliver what is buffered until ``deadline`` (monotonic), then stop (a pause in progress ends now)."""
        with self._cond:
            if not self._stop:
                self._stop = True
                self._deadline = deadline
                self._cond.notify_all()

    def close(self, deadline: float) -> None:
        """:meth:`request_stop`, wait for the thread until ``deadline``, then count what is left as dropped."""
        self.request_stop(deadline)
        if self._thread is not None:
            self._thread.join(max(0.0, deadline - time.monotonic()))
        with self._cond:
            left = count_records([*self._inflight, *self._q])
            self._abandoned = True
            self._q.clear()
            self._inflight = []
            self.dropped += left
            self._cond.notify_all()
        if left:
            log.warning("audit export %s: %d records not delivered at shutdown", self.name, left)

    def stats(self) -> dict[str, Any]:
        with self._cond:
            return {
                "sink": self.name,
                "type": self.kind,
                "delivered": self.delivered,
                "dropped": self.dropped,
                "failures": self.failures,
                "pending": len(self._inflight) + len(self._q),  # items (records and the rare checkpoint)
                "last_error": self.last_error,
            }
