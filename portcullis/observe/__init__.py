"""Observability: metrics (and, later, traces and structured logs)."""
