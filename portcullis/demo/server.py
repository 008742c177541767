"""The demo MCP server that ``make demo`` puts behind the gateway (stdio, on the official Python SDK).

Its tools are a miniature of what teams really expose: harmless reads, a tool whose output carries secrets and
personal data (for masking), and a destructive one (for policy and approvals).
"""

from __future__ import annotations

import datetime as dt

from mcp.server.mcpserver import MCPServer

app = MCPServer("portcullis-demo")

CUSTOMERS = [
    {"id": 1, "name": "Ada Lovelace", "email": "ada@example.com", "card": "4111 1111 1111 1111"},
    {"id": 2, "name": "Alan Turing", "email": "alan@example.org", "card": "5500 0000 0000 0004"},
]
NOTES = {"welcome": "Every call you make through Portcullis is recorded. Try `portcullis sessions list`."}


@app.tool()
def echo(text: str) -> str:
    """Return the text unchanged."""
    return text


@app.tool()
def current_time() -> str:
    """The server's current time (UTC, ISO 8601)."""
    return dt.datetime.now(dt.UTC).isoformat()


@app.tool()
def query_customers(limit: int = 10) -> list[dict[str, object]]:
    """Rows from the customers table (they carry personal data)."""
    return CUSTOMERS[:limit]


@app.tool()
def read_config() -> str:
    """The service's configuration file (it carries a secret)."""
    return "DATABASE_URL=postgresql://app:s3cr3t-demo-pass@db.internal:5432/app\nLOG_LEVEL=info\n"


@app.tool()
def drop_table(table: str) -> str:
    """Drop a table. Destructive."""
    return f"(demo) table {table!r} would have been dropped"


@app.resource("note://{name}")
def note(name: str) -> str:
    """A note by name."""
    return NOTES.get(name, "no such note")


@app.prompt()
def summarise(topic: str) -> str:
    """Ask for a summary of a topic."""
    return f"Please summarise what is known about {topic}."


def main() -> None:
    app.run("stdio")


if __name__ == "__main__":
    main()
