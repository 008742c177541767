"""stdio upstream: one child process per gateway session, spoken to with newline-delimited JSON-RPC.

The child gets only an allow-listed environment plus what the config names; it runs in its own process group so
the whole tree is ended on close (TERM, then KILL after a grace period).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys

import orjson

from portcullis import errors
from portcullis.config.model import AgentServerConfig, ServerConfig
from portcullis.tasks import spawn
from portcullis.upstream.routed import STOPPED, Done, RestartGate, RoutedReply, RoutedSession
from portcullis.wire.jsonrpc import parse_one

__all__ = ["Done", "RestartGate", "RoutedReply", "StdioSession", "child_env", "end_group"]

log = logging.getLogger("portcullis.upstream.stdio")

# like the MCP SDK's default: what a child needs to run, nothing that names the gateway's own secrets
DEFAULT_ENV_ALLOWLIST = (
    ("HOME", "LOGNAME", "PATH", "SHELL", "TERM", "USER", "LANG", "LC_ALL", "TMPDIR", "NODE_PATH", "VIRTUAL_ENV")
    if sys.platform != "win32"
    else ("APPDATA", "PATH", "SYSTEMROOT", "TEMP", "USERNAME", "USERPROFILE")
)
TERM_GRACE = 2.0


def child_env(cfg: ServerConfig | AgentServerConfig) -> dict[str, str]:
    env = {k: v for k in DEFAULT_ENV_ALLOWLIST if (v := os.environ.get(k)) is not None}
    for k in cfg.env_passthrough:
        if (v := os.environ.get(k)) is not None:
            env[k] = v
    env.update(cfg.env)
    return env


class StdioSession(RoutedSession):
    """One child process serving one gateway session."""

    what = "process"

    def __init__(self, name: str, cfg: ServerConfig, max_line: int, gate: RestartGate | None = None) -> None:
        assert cfg.command is not None
        super().__init__(name, cfg, gate)
        self._max_line = max_line
        self._proc: asyncio.subprocess.Process | None = None
        self.stderr_bytes = 0

    async def start(self) -> None:
        if self.gate is not None:
            self.gate.check(self.name)
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *(self.cfg.command or []),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=child_env(self.cfg),
                cwd=self.cfg.cwd,
                start_new_session=True,
                limit=self._max_line,
            )
        except OSError as exc:
            if self.gate is not None:
                self.gate.failed()
            raise errors.UpstreamError(
                errors.UPSTREAM_UNAVAILABLE, f"upstream {self.name!r} could not be started ({exc.strerror or exc})"
            ) from exc
        self._tasks.append(spawn(self._read_stdout(), name=f"stdio-out-{self.name}"))
        self._tasks.append(spawn(self._drain_stderr(), name=f"stdio-err-{self.name}"))

    async def _write(self, raw: bytes) -> None:
        if self.dead is not None or self._proc is None or self._proc.stdin is None:
            raise self._gone()
        if b"\n" in raw:  # newline-delimited framing: re-encode compactly (JSON strings escape newlines)
            raw = orjson.dumps(orjson.loads(raw))
        try:
            self._proc.stdin.write(raw + b"\n")
            await self._proc.stdin.drain()
        except (ConnectionError, RuntimeError) as exc:
            raise errors.UpstreamError(
                errors.UPSTREAM_UNAVAILABLE, f"upstream {self.name!r} process has exited"
            ) from exc

    async def _read_stdout(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        out = self._proc.stdout
        reason = "exited"
        try:
            while True:
                try:
                    line = await out.readline()
                except ValueError:
                    reason = "wrote a line longer than the limit"
                    break
                if not line:
                    break
                line = line.strip()
                if not line:
                    continue
                try:
                    msg = parse_one(line)
                except errors.ProtocolError:
                    log.warning("upstream %r wrote a line that is not JSON-RPC; ignored", self.name)
                    continue
                self._route(msg)
        finally:
            self._die(reason)

    async def _drain_stderr(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        while True:
            chunk = await self._proc.stderr.read(65536)
            if not chunk:
                return
            self.stderr_bytes += len(chunk)

    async def close(self) -> None:
        self._die(STOPPED)
        if self._proc is not None:
            await end_group(self._proc)
        await self._stop_tasks()


async def end_group(proc: asyncio.subprocess.Process) -> None:
    """End a child and its whole process group: TERM, then KILL after ``TERM_GRACE`` seconds (and a KILL for what
    the group left behind when the child itself is already gone)."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), TERM_GRACE)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
    else:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
