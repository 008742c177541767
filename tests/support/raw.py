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
