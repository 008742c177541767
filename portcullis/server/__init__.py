"""The HTTP edge: app factory, MCP endpoint, health."""
