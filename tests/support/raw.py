"""Plain JSON-RPC pieces for tests that talk to the gateway without an SDK."""

from __future__ import annotations

from typing import Any

ACCEPT = "application/json, text/event-stream"
INIT: dict[str, Any] = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
}


def initialize(msg_id: int = 0, client: str = "t") -> dict[str, Any]:
    """A session-era ``initialize`` request (2025-11-25)."""
    return {**INIT, "id": msg_id, "params": {**INIT["params"], "clientInfo": {"name": client, "version": "1"}}}


def final_message(raw: bytes, content_type: str) -> bytes:
    """The JSON-RPC message a client ends up with: the JSON body, or the last ``data:`` line of an SSE stream."""
    if not content_type.startswith("text/event-stream"):
        return raw
    return [line[6:] for line in raw.split(b"\n") if line.startswith(b"data: ") and line[6:].strip()][-1]
