"""Start ``@modelcontextprotocol/server-everything`` over Streamable HTTP, bound to loopback only.

Its ``streamableHttp`` transport calls ``app.listen(PORT, cb)`` without a host, so it
listens on every interface (``::``), and it has no HOST option or env var. We preload
``tests/support/loopback_only.cjs`` with ``node --require``: it forces every TCP listen
in the process onto ``127.0.0.1`` and prints ``LOOPBACK_LISTENING 127.0.0.1:PORT`` once
the socket is bound. We start with ``PORT=0`` and take the kernel-chosen port from that
line, so there is no port race and no polling (:func:`tests.support.procs.start_process`
waits for the line with a hard deadline).

Sync use::

    with running_everything_http() as everything:
        servers = {"everything": {"url": everything.url}}

Run as ``python -m tests.support.everything`` to start one and print its URL (Ctrl-C stops it).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from tests.support.conformance import NODE22
from tests.support.gateway import EVERYTHING_JS
from tests.support.procs import ManagedProcess, start_process

__all__ = [
    "LOOPBACK_PRELOAD",
    "READY_PREFIX",
    "EverythingHttp",
    "everything_http_argv",
    "listening_sockets",
    "running_everything_http",
]

LOOPBACK_PRELOAD = Path(__file__).resolve().with_name("loopback_only.cjs")
READY_PREFIX = "LOOPBACK_LISTENING "


@dataclass
class EverythingHttp:
    proc: ManagedProcess
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/mcp"


def listening_sockets(pid: int) -> list[tuple[str, int]]:
    """The TCP sockets process ``pid`` listens on, as the kernel sees them (what ``ss -ltnp`` shows; Linux only).

    Matches the socket inodes among ``/proc/PID/fd`` with the LISTEN rows of ``/proc/net/tcp`` and ``tcp6``.
    """
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            cols = row.split()
            local, state, inode = cols[1], cols[3], cols[9]
            if state != "0A" or inode not in inodes:  # 0A: TCP_LISTEN
                continue
            hex_addr, hex_port = local.split(":")
            raw = bytes.fromhex(hex_addr)
            # the kernel prints each 32-bit word in host (little-endian) order
            addr = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            found.append((str(ipaddress.ip_address(addr)), int(hex_port, 16)))
    return sorted(found)


def everything_http_argv(node: str | os.PathLike[str] = NODE22) -> list[str]:
    """The command line: Node with the loopback preload, running server-everything's Streamable HTTP transport."""
    return [os.fspath(node), "--require", str(LOOPBACK_PRELOAD), str(EVERYTHING_JS), "streamableHttp"]


def start_everything_http(env: Mapping[str, str] | None = None, ready_timeout: float = 30.0) -> EverythingHttp:
    proc = start_process(
        everything_http_argv(),
        ready_prefix=READY_PREFIX,
        ready_timeout=ready_timeout,
        env={**os.environ, **(env or {}), "PORT": "0"},
    )
    host, _, port = proc.ready_value.rpartition(":")
    if host != "127.0.0.1" or not port.isdigit():
        proc.stop(timeout=5)
        raise RuntimeError(f"server-everything is not on loopback: {proc.ready_line!r}\n{proc.output()}")
    return EverythingHttp(proc, host, int(port))


@contextlib.contextmanager
def running_everything_http(env: Mapping[str, str] | None = None) -> Iterator[EverythingHttp]:
    everything = start_everything_http(env)
    try:
        yield everything
    finally:
        everything.proc.stop(timeout=5)


def _main() -> int:
    import signal

    stop = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop)
    with running_everything_http() as everything:
        print(f"{everything.url} (pid {everything.proc.pid})", flush=True)
        signal.sigwait(stop)
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
