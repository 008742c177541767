"""A small bundled MCP server for the demo (``python -m portcullis.demo.server``)."""
