"""MCP version and era rules a proxy must enforce (sans-I/O)."""

from __future__ import annotations

import enum
from collections.abc import Mapping

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


def header(headers: Mapping[str, str], name: str) -> str | None:
    return headers.get(name)


def check_session_version(value: str | None) -> None:
    """The MCP-Protocol-Version header after initialize (absent means 2025-03-26 for compatibility)."""
    if value is not None and value not in SESSION_VERSIONS:
        raise errors.ProtocolError(
            400,
            errors.INVALID_REQUEST,
            f"Bad Request: unsupported MCP-Protocol-Version {value!r} for this session",
            {"supported": list(SESSION_VERSIONS)},
        )


def check_stateless_request(msg: Message, headers: Mapping[str, str]) -> str:
    """Enforce 2026-07-28 header rules: version header equals _meta, Mcp-Method/Mcp-Name mirror the body.

    Returns the protocol version. Raises ProtocolError (400, -32022 or -32020).
    """
    version = meta_version(msg)
    if version is None or version not in STATELESS_VERSIONS:
        raise errors.ProtocolError(
            400,
            errors.UNSUPPORTED_PROTOCOL_VERSION,
            f"Unsupported protocol version: {version!r}",
            {"supported": list(STATELESS_VERSIONS)},
        )
    hv = headers.get("MCP-Protocol-Version")
    if hv is None or hv != version:
        raise errors.ProtocolError(
            400,
            errors.HEADER_MISMATCH,
            f"Header mismatch: MCP-Protocol-Version {hv!r} does not equal _meta protocolVersion {version!r}",
        )
    method = msg.method
    hm = headers.get("Mcp-Method")
    if hm is None or hm != method:
        raise errors.ProtocolError(
            400, errors.HEADER_MISMATCH, f"Header mismatch: Mcp-Method {hm!r} does not equal body method {method!r}"
        )
    if method is not None and method in NAME_PARAM:
        want = msg.params.get(NAME_PARAM[method])
        hn = headers.get("Mcp-Name")
        if hn is None or hn != want:
            raise errors.ProtocolError(
                400, errors.HEADER_MISMATCH, f"Header mismatch: Mcp-Name {hn!r} does not equal the body's target"
            )
    return version


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


def accepts(accept: str | None, *types: str) -> bool:
    if not accept:
        return False
    parts = [p.split(";", 1)[0].strip().lower() for p in accept.split(",")]
    return all(t in parts or "*/*" in parts or f"{t.split('/')[0]}/*" in parts for t in types)
