"""The JSON-lines sink: one :mod:`portcullis.audit.codec` object per line, in commit order, rotated by size.

``PATH`` is appended to; when the next line would take it past ``max_bytes`` it becomes ``PATH.1`` (``PATH.1``
becomes ``PATH.2`` …, ``PATH.keep`` is deleted) and a new ``PATH`` begins. A line is never split across files and
never written twice: what a batch wrote leaves the batch at once, so a failure half-way (a full disk, a permission
changed) retries only the rest, and a torn line (a failed write, or a process killed mid-write) is cut off before the
next append. The files, oldest first, are one unbroken run of the chain: ``portcullis audit verify --file PATH.N …
--file PATH`` checks them.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import orjson

from portcullis.audit.export.base import Item, Sink, encode
from portcullis.config.model import JsonlExport

JSONL_BATCH = 1024  # lines per write
JSONL_RETRY_MAX = 5.0  # a local disk: retry often
HEAL_CHUNK = 64 * 1024


class JsonlSink(Sink):
    kind = "jsonl"

    def __init__(self, name: str, cfg: JsonlExport) -> None:
        super().__init__(name, cfg.buffer, JSONL_BATCH, JSONL_RETRY_MAX, cfg.checkpoints)
        self.path = Path(cfg.path)
        self.max_bytes = cfg.max_bytes
        self.keep = cfg.keep
        self.fsync = cfg.fsync
        self._healed = False

    def deliver(self, items: list[Item]) -> int:
        if not self._healed:
            _cut_torn_tail(self.path)
            self._healed = True
        size = self.path.stat().st_size if self.path.exists() else 0
        chunk: list[bytes] = []
        pending = 0  # bytes in chunk
        for it in list(items):
            line = orjson.dumps(encode(it)) + b"\n"
            if size + pending + len(line) > self.max_bytes and size + pending > 0:
                self._append(chunk, items)
                self._rotate()
                size, pending, chunk = 0, 0, []
            chunk.append(line)
            pending += len(line)
        self._append(chunk, items)
        return 0

    def _append(self, lines: list[bytes], items: list[Item]) -> None:
        """Write ``lines`` (the first ``len(lines)`` of ``items``) whole, or not at all; then they leave the batch."""
        if not lines:
            return
        with open(self.path, "ab") as f:
            start = f.tell()
            try:
                f.write(b"".join(lines))
                f.flush()
                if self.fsync:
                    os.fsync(f.fileno())
            except OSError:
                with contextlib.suppress(OSError):
                    f.truncate(start)
                raise
        self._written(items[: len(lines)])
        del items[: len(lines)]

    def _rotate(self) -> None:
        if not self.path.exists():
            return
        name = self.path.name
        with contextlib.suppress(FileNotFoundError):
            self.path.with_name(f"{name}.{self.keep}").unlink()
        for i in range(self.keep - 1, 0, -1):
            src = self.path.with_name(f"{name}.{i}")
            if src.exists():
                src.rename(self.path.with_name(f"{name}.{i + 1}"))
        self.path.rename(self.path.with_name(f"{name}.1"))
        if self.fsync:  # the renames too
            fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def _cut_torn_tail(path: Path) -> None:
    """A file that does not end with a newline ends with a torn line (killed mid-write): cut it off."""
    if not path.exists():
        return
    with open(path, "r+b") as f:
        end = f.seek(0, os.SEEK_END)
        if end == 0:
            return
        f.seek(end - 1)
        if f.read(1) == b"\n":
            return
        pos = end
        while pos > 0:
            start = max(0, pos - HEAL_CHUNK)
            f.seek(start)
            nl = f.read(pos - start).rfind(b"\n")
            if nl >= 0:
                f.truncate(start + nl + 1)
                return
            pos = start
        f.truncate(0)
