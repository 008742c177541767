"""Run ``portcullis`` with another store writer swapped in, for same-run A/B comparisons (bench/writer_ab.py).

    .venv/bin/python bench/gateway_variant.py WRITER serve --config CFG

WRITER is a variant of bench/store_writer_bench.py (legacy, core-conn, driver-sql, dbapi, new), ``null`` (no
store at all: every future resolves at once), ``handoff`` (the current writer's thread and wake-ups, but no
database writes), or ``lazy``: the
current writer, except that an item submitted without waiting does not wake the writer thread; it goes with the
next waited submit, or at the latest ``LAZY_S`` later. A what-if for measuring, not a shipped mode: it delays the
writing of records nobody waits for (the request records), which the gateway's contract does not do today.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import store_writer_bench  # noqa: E402

from portcullis.store import writer as current  # noqa: E402

LAZY_S = 0.05


class LazyNoWait(current.StoreWriter):
    _timer: asyncio.TimerHandle | None = None

    def submit(self, items: list[Any], wait: bool = True) -> asyncio.Future[None] | None:
        if wait or self._loop is None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            fut = super().submit(items, wait)
            if len(self._pending) > 1:  # lazy items were waiting: make sure a hand-over is scheduled
                self._loop.call_soon(self._hand_over)
            return fut
        self._pending.append((items, None))
        if self._timer is None:
            self._timer = self._loop.call_later(LAZY_S, self._lazy_flush)
        return None

    def _lazy_flush(self) -> None:
        self._timer = None
        self._hand_over()


class NullStore(current.StoreWriter):
    """No thread, no database: every future resolves at once (the gateway's cost without a store)."""

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def submit(self, items: list[Any], wait: bool = True) -> asyncio.Future[None] | None:
        if not wait:
            return None
        assert self._loop is not None
        fut = self._loop.create_future()
        fut.set_result(None)
        return fut


class HandoffOnly(current.StoreWriter):
    """The writer thread and its hand-overs and wake-ups, but no database (the cost of the threading alone)."""

    def _write(self, recs: list[Any], opens: list[Any], ends: list[Any]) -> None:
        pass


class Niced(current.StoreWriter):
    """The current writer, its thread at a higher nice value (a what-if: fewer preemptions of the loop thread)."""

    nice = 19

    def _run(self) -> None:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self.nice)
        super()._run()


class IdleClass(current.StoreWriter):
    """The current writer, its thread in SCHED_IDLE (a what-if: it runs only when the loop thread sleeps)."""

    def _run(self) -> None:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        super()._run()


def main() -> None:
    name, rest = sys.argv[1], sys.argv[2:]
    classes = store_writer_bench.variants("b34dc37")
    classes["lazy"] = LazyNoWait
    classes["null"] = NullStore
    for n in (5, 10, 19):
        classes[f"nice{n}"] = type(f"Niced{n}", (Niced,), {"nice": n})
    classes["idle"] = IdleClass
    classes["handoff"] = HandoffOnly
    import portcullis.server.gateway as gateway
    from portcullis.cli.main import main as cli_main

    gateway.StoreWriter = classes[name]  # type: ignore[misc]
    sys.argv = ["portcullis", *rest]
    print(f"store writer variant: {name} ({classes[name].__module__}.{classes[name].__qualname__})", flush=True)
    cli_main()


if __name__ == "__main__":
    main()
