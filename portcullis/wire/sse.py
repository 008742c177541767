"""Server-Sent Events: an incremental parser and an encoder (sans-I/O)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Event:
    data: bytes
    event: str | None = None
    id: str | None = None
    retry: int | None = None


class SSEParseError(ValueError):
    pass


class SSEParser:
    """Feed bytes, get complete events. Bounded: an event larger than ``max_event`` raises SSEParseError."""

    __slots__ = ("_buf", "_data", "_event", "_id", "_retry", "_size", "max_event")

    def __init__(self, max_event: int = 16 * 1024 * 1024) -> None:
        self._buf = b""
        self._data: list[bytes] = []
        self._event: str | None = None
        self._id: str | None = None
        self._retry: int | None = None
        self._size = 0
        self.max_event = max_event

    def feed(self, chunk: bytes) -> list[Event]:
        buf = self._buf + chunk if self._buf else chunk
        out: list[Event] = []
        start = 0
        n = len(buf)
        while start < n:
            nl = buf.find(b"\n", start)
            if nl < 0:
                break
            line = buf[start:nl]
            start = nl + 1
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line:
                if self._data or self._event is not None:
                    out.append(Event(b"\n".join(self._data), self._event, self._id, self._retry))
                self._data = []
                self._event = None
                self._retry = None
                self._size = 0
                continue
            if line[0] == 58:  # b":" comment / keep-alive
                continue
            colon = line.find(b":")
            if colon < 0:
                name, value = line, b""
            else:
                name = line[:colon]
                value = line[colon + 1 :]
                if value[:1] == b" ":
                    value = value[1:]
            if name == b"data":
                self._data.append(value)
                self._size += len(value)
                if self._size > self.max_event:
                    raise SSEParseError(f"SSE event larger than {self.max_event} bytes")
            elif name == b"event":
                self._event = value.decode("utf-8", "replace")
            elif name == b"id":
                if b"\x00" not in value:
                    self._id = value.decode("utf-8", "replace")
            elif name == b"retry" and value.isdigit():
                self._retry = int(value)
        rest = buf[start:]
        if len(rest) > self.max_event:
            raise SSEParseError(f"SSE line longer than {self.max_event} bytes")
        self._buf = rest
        return out


def encode(data: bytes, event_id: str | None = None, event: str | None = "message", retry: int | None = None) -> bytes:
    parts: list[bytes] = []
    if event_id is not None:
        parts.append(b"id: " + event_id.encode())
    if event is not None:
        parts.append(b"event: " + event.encode())
    if retry is not None:
        parts.append(b"retry: " + str(retry).encode())
    if b"\n" in data:
        parts.extend(b"data: " + line for line in data.split(b"\n"))
    else:
        parts.append(b"data: " + data)
    return b"\n".join(parts) + b"\n\n"
