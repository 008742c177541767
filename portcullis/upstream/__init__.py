"""Upstream transports: Streamable HTTP (either era), stdio child processes."""
