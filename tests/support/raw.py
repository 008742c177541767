"""Plain JSON-RPC pieces for tests that talk to the gateway without an SDK."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import aiohttp

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


class McpSession:
    """One MCP session of one caller: raw JSON-RPC over Streamable HTTP (session era, 2025-11-25), as a bearer."""

    def __init__(self, http: aiohttp.ClientSession, url: str, token: str, client: str = "t") -> None:
        self.http, self.url, self.token, self.client = http, url, token, client
        self.sid: str | None = None
        self.n = 0

    async def rpc(self, method: str, params: dict[str, Any], **extra: str) -> dict[str, Any]:
        """Send one request; the answer (the JSON body, or the response on the SSE stream)."""
        self.n += 1
        h = {"Content-Type": "application/json", "Accept": ACCEPT, "Authorization": f"Bearer {self.token}", **extra}
        if self.sid:
            h |= {"Mcp-Session-Id": self.sid, "MCP-Protocol-Version": "2025-11-25"}
        body = {"jsonrpc": "2.0", "id": self.n, "method": method, "params": params}
        async with self.http.post(self.url, json=body, headers=h) as r:
            self.sid = self.sid or r.headers.get("Mcp-Session-Id")
            raw = await r.read()
        if not raw.startswith(b"{"):
            raw = next(line[6:] for line in raw.split(b"\n") if line.startswith(b"data: ") and b'"id"' in line)
        msg: dict[str, Any] = json.loads(raw)
        return msg

    async def open(self) -> McpSession:
        await self.rpc("initialize", {**INIT["params"], "clientInfo": {"name": self.client, "version": "1"}})
        return self

    async def call_tool(self, tool: str, args: dict[str, Any], **headers: str) -> dict[str, Any]:
        return await self.rpc("tools/call", {"name": tool, "arguments": args}, **headers)
