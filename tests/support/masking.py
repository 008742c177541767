"""Pieces for the masking end-to-end tests: planted secrets, and an SDK client that keeps every byte it receives.

:data:`PLANTED` holds fake secrets and PII of every shape the leaky fixture server
(``tests/fixtures/leaky_server.py``) leaks. They are generated (from a fixed seed, so a failure reproduces), not
written out in the source: nothing here looks like a real credential to a secret scanner, and each value is
unique enough that finding its literal anywhere means it leaked. Each value passes the validator of its class
(Luhn for the card, mod-97 for the IBAN, entropy for the keys). The leaky server gets them as JSON in the
``LEAKY_PLANTED`` environment variable (:func:`leaky_server_env`).

:func:`tapped_client` opens the official SDK client (``mcp.client.Client``) on an httpx transport that tees every
response body it reads into a :class:`Tap`: what the client received, byte for byte, for "this literal never
reached the client" assertions, and the JSON-RPC messages of each SSE stream in wire order.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import random
import string
import sys
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
from mcp.client import Client
from mcp.client.streamable_http import streamable_http_client

from tests.support.gateway import REPO_ROOT

__all__ = [
    "LEAKY_SERVER",
    "PLANTED",
    "Tap",
    "db_files_bytes",
    "leaked",
    "leaky_server_argv",
    "leaky_server_env",
    "tapped_client",
]

LEAKY_SERVER = REPO_ROOT / "tests" / "fixtures" / "leaky_server.py"

_rng = random.Random(20261124)
_ALNUM = string.ascii_letters + string.digits


def _pick(alphabet: str, n: int) -> str:
    return "".join(_rng.choice(alphabet) for _ in range(n))


def _luhn_complete(partial: str) -> str:
    """``partial`` plus the Luhn check digit."""
    total = 0
    for i, ch in enumerate(reversed(partial)):
        d = int(ch)
        if i % 2 == 0:  # these get doubled once the check digit is appended
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return partial + str((10 - total % 10) % 10)


def _iban(country: str, bban: str) -> str:
    """A mod-97-valid IBAN for ``bban`` (digits)."""
    numeric = "".join(str(int(c, 36)) for c in bban + country + "00")
    return f"{country}{98 - int(numeric) % 97:02d}{bban}"


def _b64url(obj: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj, separators=(",", ":")).encode()).rstrip(b"=").decode()


def _planted() -> dict[str, str]:
    card = _luhn_complete("4" + "".join(_rng.choice(string.digits) for _ in range(14)))
    iban = _iban("DE", "".join(_rng.choice(string.digits) for _ in range(18)))
    jwt_body = _b64url({"sub": "planted-" + _pick(string.ascii_lowercase, 8), "iat": 1764000000})
    jwt = f"{_b64url({'alg': 'HS256', 'typ': 'JWT'})}.{jwt_body}.{_pick(_ALNUM + '-_', 43)}"
    pem_body = _pick(_ALNUM + "+/", 64)
    return {
        "aws_access_key_id": "AK" + "IA" + _pick(string.ascii_uppercase + "234567", 16),
        "aws_secret_access_key": _pick(_ALNUM, 40),
        "github_token": "gh" + "p_" + _pick(_ALNUM, 36),
        "gitlab_token": "gl" + "pat-" + _pick(_ALNUM, 20),
        "stripe_key": "sk" + "_live_" + _pick(_ALNUM, 24),
        "llm_api_key": "sk" + "-proj-" + _pick(_ALNUM, 40),
        "slack_webhook": "https://hooks.slack.com/services/T"
        + _pick(string.ascii_uppercase, 8)
        + "/B"
        + _pick(string.ascii_uppercase, 8)
        + "/"
        + _pick(_ALNUM, 24),
        "jwt": jwt,
        "private_key_body": pem_body,
        "db_password": "Pw" + _pick(_ALNUM, 14),
        "password": "Hx" + _pick(_ALNUM, 10) + "!9q",
        "email": f"planted.{_pick(string.ascii_lowercase, 8)}@example.com",
        "email2": f"second.{_pick(string.ascii_lowercase, 8)}@example.org",
        "card": " ".join(card[i : i + 4] for i in range(0, 16, 4)),
        "phone": "+1 650 253 " + "".join(_rng.choice(string.digits) for _ in range(4)),
        "iban": iban,
        "us_ssn": f"{_rng.randint(100, 665)}-{_rng.randint(10, 99)}-{_rng.randint(1000, 9999)}",
        "employee_id": "EMP-" + "".join(_rng.choice(string.digits) for _ in range(6)),
    }


PLANTED: dict[str, str] = _planted()
"""name -> a fake secret or PII value; the leaky server leaks these."""


def leaky_server_argv(port: int = 0) -> list[str]:
    return [sys.executable, str(LEAKY_SERVER), "--host", "127.0.0.1", "--port", str(port)]


def leaky_server_env(planted: Mapping[str, str] = PLANTED) -> dict[str, str]:
    return {**os.environ, "LEAKY_PLANTED": json.dumps(dict(planted))}


def leaked(data: bytes | str, literals: Iterable[str]) -> list[str]:
    """The literals that occur in ``data`` (raw, or JSON-escaped as inside a JSON string)."""
    blob = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    out = []
    for lit in literals:
        forms = {lit.encode(), json.dumps(lit)[1:-1].encode()}
        if any(f in blob for f in forms):
            out.append(lit)
    return out


def db_files_bytes(store: str) -> bytes:
    """Every byte of an SQLite store (the database file plus its -wal and -journal files, if any)."""
    path = Path(store.removeprefix("sqlite:///"))
    chunks = []
    for p in (path, Path(f"{path}-wal"), Path(f"{path}-journal"), Path(f"{path}-shm")):
        if p.exists():
            chunks.append(p.read_bytes())
    assert chunks, f"no database file at {path}"
    return b"\n".join(chunks)


@dataclass
class Tap:
    """Every response body the client read, one entry per HTTP response, as the bytes arrived."""

    bodies: list[bytearray] = field(default_factory=list)

    def received(self) -> bytes:
        return b"\n".join(bytes(b) for b in self.bodies)

    def messages(self) -> list[dict[str, Any]]:
        """The JSON-RPC messages in the bodies: each SSE ``data:`` event, or a whole JSON body, in order."""
        out: list[dict[str, Any]] = []
        for body in self.bodies:
            raw = bytes(body)
            stripped = raw.lstrip()
            if stripped.startswith((b"{", b"[")):
                got = json.loads(raw)
                out.extend(got if isinstance(got, list) else [got])
                continue
            for event in raw.replace(b"\r\n", b"\n").split(b"\n\n"):
                data = b"\n".join(line[5:].lstrip(b" ") for line in event.split(b"\n") if line.startswith(b"data:"))
                if data.strip():
                    out.append(json.loads(data))
        return out


class _TeeStream(httpx2.AsyncByteStream):
    def __init__(self, inner: Any, sink: bytearray) -> None:
        self._inner = inner
        self._sink = sink

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._inner:
            self._sink += chunk
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


class _TeeTransport(httpx2.AsyncBaseTransport):
    def __init__(self, tap: Tap) -> None:
        self._inner = httpx2.AsyncHTTPTransport()
        self._tap = tap

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        response = await self._inner.handle_async_request(request)
        sink = bytearray()
        self._tap.bodies.append(sink)
        return httpx2.Response(
            response.status_code,
            headers=response.headers,
            stream=_TeeStream(response.stream, sink),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self._inner.aclose()


@contextlib.asynccontextmanager
async def tapped_client(url: str, **client_kwargs: Any) -> AsyncIterator[tuple[Client, Tap]]:
    """The SDK client (session era) on ``url``, with every byte it receives kept in the :class:`Tap`.

    SSE events of any size are accepted (the 10 MB test needs more than the SDK's 1 MiB default).
    """
    tap = Tap()
    timeout = httpx2.Timeout(30.0, read=120.0)
    async with httpx2.AsyncClient(transport=_TeeTransport(tap), timeout=timeout) as http:
        transport = streamable_http_client(url, http_client=http, max_sse_event_size=None)
        async with Client(transport, mode="legacy", **client_kwargs) as client:
            yield client, tap
