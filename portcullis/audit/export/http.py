"""HTTP delivery (``urllib``, from the sink's own thread) and the webhook sink.

A batch counts as delivered on a 2xx. A 4xx other than 408 and 429 means this batch will never be taken
(:class:`Refused`: dropped and counted); 5xx, 408, 429, a redirect (never followed: it would carry the trail and the
credential elsewhere) and any connection error are retried. Nothing here puts a URL, a header value or a body into
an exception message, a log line or the stats.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import orjson

from portcullis.audit.export.base import Item, Refused, Sink, Unavailable, encode
from portcullis.config.model import WebhookExport
from portcullis.errors import ConfigError
from portcullis.upstream.netguard import RefusedAddress, current_guard

RETRY_STATUSES = frozenset({408, 429})
MAX_ANSWER = 1 << 20  # bytes of a response body read (an OTLP partial_success is tiny)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class Poster:
    """POSTs bodies to one URL with fixed headers; returns the response body of a 2xx."""

    def __init__(self, url: str, headers: dict[str, str], timeout: float) -> None:
        self.url = url
        self.headers = headers
        self.timeout = timeout
        self._opener = urllib.request.build_opener(_NoRedirect)

    def post(self, body: bytes) -> bytes:
        u = urllib.parse.urlsplit(self.url)
        try:
            current_guard().check_name(u.hostname or "", u.port or (443 if u.scheme == "https" else 80))
        except RefusedAddress as exc:
            raise Refused(str(exc)) from None  # not retried: the configuration must allow it
        except OSError:
            pass  # cannot resolve now: the request below fails and is retried
        req = urllib.request.Request(self.url, data=body, headers=self.headers, method="POST")
        try:
            with self._opener.open(req, timeout=self.timeout) as resp:
                data: bytes = resp.read(MAX_ANSWER)
                return data
        except urllib.error.HTTPError as exc:
            code = exc.code
            exc.close()
            if 400 <= code < 500 and code not in RETRY_STATUSES:
                raise Refused(f"HTTP {code}") from None
            raise Unavailable(f"HTTP {code}") from None


def env_headers(where: str, from_env: dict[str, str]) -> dict[str, str]:
    """``{header: VARIABLE}`` to ``{header: value}``; an unset variable is a configuration error (named, not shown)."""
    out = {}
    for header, var in from_env.items():
        value = os.environ.get(var)
        if value is None:
            raise ConfigError([f"{where}.headers_from_env.{header}: ${var} is not set"])
        out[header] = value
    return out


def env_url(where: str, url: str) -> str:
    """The URL itself, or the value of ``env:VARIABLE``."""
    if not url.startswith("env:"):
        return url
    value = os.environ.get(url[4:], "")
    if not value.startswith(("http://", "https://")):
        raise ConfigError([f"{where}.url: ${url[4:]} is not set to an http:// or https:// URL"])
    return value


class WebhookSink(Sink):
    """POSTs ``{"records": [...], "checkpoints": [...]}`` (JSON, each object the codec's form) per batch."""

    kind = "webhook"

    def __init__(self, name: str, cfg: WebhookExport, where: str = "recording.export") -> None:
        super().__init__(name, cfg.buffer, cfg.batch, cfg.retry_max, cfg.checkpoints)
        headers = {**env_headers(where, cfg.headers_from_env), "Content-Type": "application/json"}
        self.poster = Poster(env_url(where, cfg.url), headers, cfg.timeout)

    def deliver(self, items: list[Item]) -> int:
        body = {
            "records": [encode(it) for it in items if it[0] == "record"],
            "checkpoints": [encode(it) for it in items if it[0] == "checkpoint"],
        }
        self.poster.post(orjson.dumps(body))
        return 0
