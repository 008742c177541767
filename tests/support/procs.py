"""Start helper processes for end-to-end tests and tear them down reliably.

A helper process announces readiness by printing one line on stdout that starts
with a known prefix (``READY http://127.0.0.1:PORT/mcp`` for the conformance
fixture). :func:`start_process` waits for that line with a hard deadline, reading
stdout lines on a background thread (no polling, no sleeps), and keeps draining
both pipes afterwards so the child can never block on a full pipe. The child runs
in its own session, so :meth:`ManagedProcess.stop` can signal its whole process
group (children included): SIGTERM first, then SIGKILL after a bounded wait.

Sync use::

    with running_process([sys.executable, "tests/fixtures/conformance_server.py", "--port", "0"]) as proc:
        url = proc.ready_value  # "http://127.0.0.1:PORT/mcp"

Async use (the blocking waits run in a worker thread)::

    async with async_running_process(argv) as proc:
        ...
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

__all__ = [
    "ManagedProcess",
    "ProcessStartError",
    "async_running_process",
    "running_process",
    "start_process",
]

_EOF = object()


class ProcessStartError(RuntimeError):
    """The process exited, or did not print its ready line, before the deadline."""


@dataclass
class ManagedProcess:
    """A started child process and what it has printed so far."""

    argv: list[str]
    popen: subprocess.Popen[bytes]
    ready_line: str = ""
    tail_size: int = 400
    stdout_tail: collections.deque[str] = field(default_factory=collections.deque)
    stderr_tail: collections.deque[str] = field(default_factory=collections.deque)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lines: queue.Queue[object] = field(default_factory=queue.Queue)
    _waiting: threading.Event = field(default_factory=threading.Event)

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def ready_value(self) -> str:
        """What follows the ready prefix on the ready line (e.g. the URL)."""
        parts = self.ready_line.split(maxsplit=1)
        return parts[1].strip() if len(parts) == 2 else ""

    def output(self) -> str:
        """The retained tail of stdout and stderr, for failure messages."""
        return (
            "--- stdout (tail) ---\n"
            + "".join(self.stdout_tail)
            + "--- stderr (tail) ---\n"
            + "".join(self.stderr_tail)
        )

    def is_running(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM the process group, SIGKILL it after ``timeout`` seconds; returns the exit code."""
        try:
            pgid = os.getpgid(self.popen.pid)
        except ProcessLookupError:
            pgid = None
        if self.popen.poll() is None and pgid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pgid, signal.SIGKILL)
                self.popen.wait(timeout=timeout)
        elif pgid is not None:
            # The leader is gone; make sure nothing it spawned survives it.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
        for thread in self._threads:
            thread.join(timeout=timeout)
        for pipe in (self.popen.stdout, self.popen.stderr):
            if pipe is not None:
                pipe.close()
        return self.popen.returncode


def _pump(
    stream: object,
    tail: collections.deque[str],
    tail_size: int,
    lines: queue.Queue[object] | None,
    waiting: threading.Event,
) -> None:
    """Drain one pipe until EOF; while ``waiting`` is set, also hand each line to ``lines``."""
    assert hasattr(stream, "readline")
    try:
        for raw in iter(stream.readline, b""):  # type: ignore[attr-defined]
            line = raw.decode("utf-8", "replace")
            tail.append(line)
            while len(tail) > tail_size:
                tail.popleft()
            if lines is not None and waiting.is_set():
                lines.put(line)
    except (OSError, ValueError):
        pass  # pipe closed under us during teardown
    finally:
        if lines is not None:
            lines.put(_EOF)


def start_process(
    argv: Sequence[str | os.PathLike[str]],
    *,
    ready_prefix: str = "READY",
    ready_timeout: float = 30.0,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    tail_size: int = 400,
) -> ManagedProcess:
    """Start ``argv`` in a new process group and wait for a stdout line starting with ``ready_prefix``.

    Raises:
        ProcessStartError: the process exited first, or ``ready_timeout`` seconds passed; the
            process group is killed and the captured output is in the message.
    """
    args = [os.fspath(a) for a in argv]
    popen = subprocess.Popen(
        args,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(env) if env is not None else None,
        cwd=cwd,
        start_new_session=True,
    )
    proc = ManagedProcess(argv=args, popen=popen, tail_size=tail_size)
    proc._waiting.set()
    for stream, tail, lines in (
        (popen.stdout, proc.stdout_tail, proc._lines),
        (popen.stderr, proc.stderr_tail, None),
    ):
        thread = threading.Thread(
            target=_pump, args=(stream, tail, tail_size, lines, proc._waiting), name=f"pump-{popen.pid}", daemon=True
        )
        thread.start()
        proc._threads.append(thread)

    deadline = time.monotonic() + ready_timeout
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ProcessStartError(
                    f"{args[:3]!r}: no {ready_prefix!r} line within {ready_timeout}s\n{proc.output()}"
                )
            try:
                item = proc._lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if item is _EOF:
                try:
                    code: int | None = popen.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    code = None  # closed stdout but kept running
                raise ProcessStartError(
                    f"{args[:3]!r} exited with {code} before printing {ready_prefix!r}\n{proc.output()}"
                )
            assert isinstance(item, str)
            if item.startswith(ready_prefix):
                proc.ready_line = item.rstrip("\r\n")
                proc._waiting.clear()
                return proc
    except BaseException:
        proc.stop(timeout=2.0)
        raise


@contextlib.contextmanager
def running_process(
    argv: Sequence[str | os.PathLike[str]],
    *,
    ready_prefix: str = "READY",
    ready_timeout: float = 30.0,
    stop_timeout: float = 5.0,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> Iterator[ManagedProcess]:
    """Context manager around :func:`start_process`; kills the process group on exit."""
    proc = start_process(argv, ready_prefix=ready_prefix, ready_timeout=ready_timeout, env=env, cwd=cwd)
    try:
        yield proc
    finally:
        proc.stop(timeout=stop_timeout)


@contextlib.asynccontextmanager
async def async_running_process(
    argv: Sequence[str | os.PathLike[str]],
    *,
    ready_prefix: str = "READY",
    ready_timeout: float = 30.0,
    stop_timeout: float = 5.0,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> AsyncIterator[ManagedProcess]:
    """Async variant of :func:`running_process`: the bounded waits run in a worker thread."""
    proc = await asyncio.to_thread(
        start_process, argv, ready_prefix=ready_prefix, ready_timeout=ready_timeout, env=env, cwd=cwd
    )
    try:
        yield proc
    finally:
        await asyncio.to_thread(proc.stop, stop_timeout)
