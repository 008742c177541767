"""MCP version and era rules a proxy must enforce (sans-I/O)."""

from __future__ import annotations

import base64
import enum
from collections.abc import Mapping
from typing import Any

from portcullis import errors
from portcullis.wire.jsonrpc import Message

SESSION_VERSIONS = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
STATELESS_VERSIONS = ("2026-07-28",)
ALL_VERSIONS = SESSION_VERSIONS + STATELESS_VERSIONS
LATEST_SESSION_VERSION = SESSION_VERSIONS[-1]
BATCH_VERSIONS = frozenset({"2025-03-26"})
META_VERSION_KEY = "io.modelcontextprotocol/protocolVersion"

# methods whose target travels in Mcp-Name (2026-07-28), and the param that carries it
NAME_PARAM = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}


class Era(enum.Enum):
    SESSION = "session"  # 2024-11-05 .. 2025-11-25
    STATELESS = "stateless"  # 2026-07-28


def meta_version(msg: Message) -> str | None:
    meta = msg.params.get("_meta")
    if isinstance(meta, dict):
        v = meta.get(META_VERSION_KEY)
        if isinstance(v, str):
            return v
    return None


def check_session_version(value: str | None) -> None:
    """The MCP-Protocol-Version header after initialize (absent means 2025-03-26 for compatibility)."""
    if value is not None and value not in SESSION_VERSIONS:
        raise errors.ProtocolError(
            400,
            errors.INVALID_REQUEST,
            f"Bad Request: unsupported MCP-Protocol-Version {value!r} for this session",
            {"supported": list(SESSION_VERSIONS)},
        )


ROUTING_HEADERS = ("MCP-Protocol-Version", "Mcp-Method", "Mcp-Name")
CLIENT_CAPABILITIES_KEY = "io.modelcontextprotocol/clientCapabilities"


def decode_header_value(value: str | None) -> str | None:
    """Header values that are not plain ASCII travel as ``=?base64?<payload>?=`` (canonical base64 of UTF-8)."""
    if value is None or not (value.startswith("=?base64?") and value.endswith("?=")):
        return value
    payload = value[9:-2]
    try:
        raw = base64.b64decode(payload, validate=True)
        if base64.b64encode(raw).decode("ascii") != payload:
            return None
        return raw.decode("utf-8")
    except ValueError:  # binascii.Error, UnicodeDecodeError, and non-ASCII text in the payload (found by atheris)
        return None


def check_stateless_request(msg: Message, headers: Mapping[str, str], duplicated: str | None = None) -> str:
    """The 2026-07-28 validation ladder for one request; the first failing rung wins.

    1. ``params._meta`` carries the protocol version and client capabilities -> else -32602.
    2. ``MCP-Protocol-Version`` equals the envelope's version, ``Mcp-Method`` the body's method, ``Mcp-Name`` the
       body's target (for tools/call, prompts/get, resources/read); no routing header appears twice -> else -32020.
    3. The version is one we speak -> else -32022 with ``data.supported`` and ``data.requested``.

    Returns the protocol version; raises ProtocolError (HTTP 400) carrying the request id.
    """
    mid = msg.id if isinstance(msg.id, str | int) else None
    meta = msg.params.get("_meta")
    if not isinstance(meta, dict):
        raise errors.ProtocolError(
            400,
            errors.INVALID_PARAMS,
            f"Invalid params: params._meta must be an object carrying {META_VERSION_KEY!r} and "
            f"{CLIENT_CAPABILITIES_KEY!r}",
            msg_id=mid,
        )
    missing = [k for k in (META_VERSION_KEY, CLIENT_CAPABILITIES_KEY) if k not in meta]
    if missing:
        raise errors.ProtocolError(
            400, errors.INVALID_PARAMS, f"Invalid params: params._meta is missing {', '.join(missing)}", msg_id=mid
        )
    version = meta[META_VERSION_KEY]
    if duplicated is not None:
        raise errors.ProtocolError(
            400, errors.HEADER_MISMATCH, f"Header mismatch: {duplicated} appears more than once", msg_id=mid
        )
    hv = headers.get("MCP-Protocol-Version")
    if hv is None or hv != version:
        raise errors.ProtocolError(
            400,
            errors.HEADER_MISMATCH,
            "Header mismatch: MCP-Protocol-Version does not equal the envelope's protocol version",
            msg_id=mid,
        )
    method = msg.method
    if headers.get("Mcp-Method") != method:
        raise errors.ProtocolError(
            400, errors.HEADER_MISMATCH, "Header mismatch: Mcp-Method does not equal the body's method", msg_id=mid
        )
    if method is not None and method in NAME_PARAM:
        want = msg.params.get(NAME_PARAM[method])
        if want is not None and decode_header_value(headers.get("Mcp-Name")) != want:
            raise errors.ProtocolError(
                400,
                errors.HEADER_MISMATCH,
                f"Header mismatch: Mcp-Name does not equal the body's {NAME_PARAM[method]!r}",
                msg_id=mid,
            )
    if not isinstance(version, str):
        raise errors.ProtocolError(
            400, errors.INVALID_PARAMS, "Invalid params: the protocol version must be a string", msg_id=mid
        )
    if version not in STATELESS_VERSIONS:
        raise errors.ProtocolError(
            400,
            errors.UNSUPPORTED_PROTOCOL_VERSION,
            "Unsupported protocol version",
            {"supported": list(STATELESS_VERSIONS), "requested": version},
            msg_id=mid,
        )
    return version


def duplicated_routing_header(headers: Any) -> str | None:
    """A routing header sent twice (first-copy and last-copy readers would disagree)."""
    getall = getattr(headers, "getall", None)
    if getall is None:
        return None
    for name in ROUTING_HEADERS:
        if len(getall(name, ())) > 1:
            return name
    return None


def name_of(msg: Message) -> str | None:
    """The tool, prompt or resource a request targets, if any."""
    method = msg.method
    if method is None:
        return None
    key = NAME_PARAM.get(method)
    if key is None:
        return None
    v = msg.params.get(key)
    return v if isinstance(v, str) else None


_ACCEPTS: dict[tuple[str, tuple[str, ...]], bool] = {}


def accepts(accept: str | None, *types: str) -> bool:
    """Whether an Accept header lists every one of ``types`` (memoized: clients send the same header each time)."""
    if not accept:
        return False
    key = (accept, types)
    hit = _ACCEPTS.get(key)
    if hit is None:
        hit = _accepts(accept, types)
        if len(_ACCEPTS) < 256:
            _ACCEPTS[key] = hit
    return hit


def _accepts(accept: str, types: tuple[str, ...]) -> bool:
    parts = [p.split(";", 1)[0].strip().lower() for p in accept.split(",")]
    return all(t in parts or "*/*" in parts or f"{t.split('/')[0]}/*" in parts for t in types)
