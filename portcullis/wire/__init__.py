"""Sans-I/O wire layer: JSON-RPC envelopes, MCP version rules, SSE frames."""
