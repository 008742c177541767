"""Logs: text for people, or one JSON object per line (``portcullis serve --log-format json``: ``ts``, ``level``,
``logger``, ``message``) with the request's ``request_id`` (minted by the gateway per HTTP request), ``server``,
``session_id`` and ``trace_id``/``span_id`` when the line comes from handling a request.

What may be logged is settled elsewhere (docs/security.md, "never leak"): no token, secret, argument or result is
ever a log argument; this module only shapes lines.
"""

from __future__ import annotations

import contextvars
import logging
import os
import sys
from typing import Any

LOG_CONTEXT: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("portcullis_log", default=None)
JSON_LINES = [False]  # set by setup(): only JSON lines show the request's context (the edge skips it otherwise)
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def request_id() -> str:
    """An id for one HTTP request's log lines (the gateway's own: never the client's JSON-RPC id)."""
    return os.urandom(8).hex()


class RequestContext(logging.Filter):
    """Adds ``request_id``, ``server``, ``session_id`` and ``trace_id`` of the request being handled (absent outside
    one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        ctx = LOG_CONTEXT.get()
        if ctx:
            for k, v in ctx.items():
                if v is not None:
                    setattr(record, k, v)
        from portcullis.observe.tracing import _span

        span = _span.get()
        if span is not None:
            sc = span.get_span_context()
            record.trace_id = f"{sc.trace_id:032x}"
            record.span_id = f"{sc.span_id:016x}"
        return True


def setup(level: str, fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    JSON_LINES[0] = fmt == "json"
    if fmt == "json":
        from pythonjsonlogger.json import JsonFormatter

        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s",
                rename_fields={"asctime": "ts", "levelname": "level", "name": "logger"},
                timestamp=False,
            )
        )
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    handler.addFilter(RequestContext())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level.upper()))
