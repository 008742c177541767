"""Era translation, sans-I/O: reshape messages between the session era and the stateless 2026-07-28 era.

Used when a client of one era reaches an upstream that speaks only the other:

- a 2026-07-28 client → a session-era upstream: the gateway holds a session upstream on the clients' behalf; results
  gain the fields 2026-07-28 requires (``resultType``, and cache hints on cacheable results), and ``server/discover``
  is answered from the upstream's ``initialize`` result;
- a session-era client → a 2026-07-28-only upstream: ``initialize`` is answered from the upstream's
  ``server/discover``, and every request carries the session's version, capabilities and client info in ``_meta``.
"""

from __future__ import annotations

from typing import Any

from portcullis.wire.jsonrpc import JsonObject
from portcullis.wire.mcp import LATEST_SESSION_VERSION, META_VERSION_KEY, SESSION_VERSIONS, STATELESS_VERSIONS

CLIENT_CAPABILITIES_KEY = "io.modelcontextprotocol/clientCapabilities"
CLIENT_INFO_KEY = "io.modelcontextprotocol/clientInfo"
SERVER_INFO_KEY = "io.modelcontextprotocol/serverInfo"
LOG_LEVEL_KEY = "io.modelcontextprotocol/logLevel"
STATELESS_VERSION = STATELESS_VERSIONS[-1]

# results that 2026-07-28 marks cacheable: they must carry ttlMs and cacheScope
CACHEABLE = frozenset({"tools/list", "prompts/list", "resources/list", "resources/templates/list", "resources/read"})


def stateless_result(method: str | None, result: Any) -> JsonObject | None:
    """The result a 2026-07-28 client expects for a session-era upstream's ``result``; None if unchanged.

    Cache hints are the most conservative ones (``ttlMs`` 0, ``cacheScope`` private): the gateway cannot know more.
    """
    if not isinstance(result, dict):
        return None
    out = dict(result)
    if "resultType" not in out:
        out["resultType"] = "complete"
    if method in CACHEABLE:
        out.setdefault("ttlMs", 0)
        out.setdefault("cacheScope", "private")
    return out if out != result else None


def discover_from_initialize(init_result: JsonObject) -> JsonObject:
    """A ``server/discover`` result built from a session-era ``initialize`` result."""
    out: JsonObject = {
        "capabilities": init_result.get("capabilities", {}),
        "supportedVersions": list(STATELESS_VERSIONS),
        "resultType": "complete",
        "ttlMs": 0,
        "cacheScope": "private",
    }
    if isinstance(init_result.get("instructions"), str):
        out["instructions"] = init_result["instructions"]
    if isinstance(init_result.get("serverInfo"), dict):
        out["_meta"] = {SERVER_INFO_KEY: init_result["serverInfo"]}
    return out


def initialize_from_discover(discover: JsonObject, requested: object) -> JsonObject:
    """An ``initialize`` result for a session-era client, built from a 2026-07-28 ``server/discover`` result."""
    version = requested if isinstance(requested, str) and requested in SESSION_VERSIONS else LATEST_SESSION_VERSION
    meta = discover.get("_meta")
    server_info = meta.get(SERVER_INFO_KEY) if isinstance(meta, dict) else None
    out: JsonObject = {
        "protocolVersion": version,
        "capabilities": discover.get("capabilities", {}),
        "serverInfo": server_info if isinstance(server_info, dict) else {"name": "upstream", "version": "unknown"},
    }
    if isinstance(discover.get("instructions"), str):
        out["instructions"] = discover["instructions"]
    return out


def stateless_meta(capabilities: object, client_info: object, log_level: str | None) -> JsonObject:
    """The per-request ``_meta`` envelope a 2026-07-28 upstream requires, from a session's ``initialize``."""
    meta: JsonObject = {
        META_VERSION_KEY: STATELESS_VERSION,
        CLIENT_CAPABILITIES_KEY: capabilities if isinstance(capabilities, dict) else {},
    }
    if isinstance(client_info, dict):
        meta[CLIENT_INFO_KEY] = client_info
    if log_level is not None:
        meta[LOG_LEVEL_KEY] = log_level
    return meta


def with_meta(body: JsonObject, meta: JsonObject) -> JsonObject:
    """``body`` with ``meta`` merged under ``params._meta`` (the request's own ``_meta`` keys win)."""
    params = body.get("params")
    p: JsonObject = dict(params) if isinstance(params, dict) else {}
    old = p.get("_meta")
    p["_meta"] = {**meta, **old} if isinstance(old, dict) else dict(meta)
    return {**body, "params": p}


def stateless_headers(body: JsonObject) -> dict[str, str]:
    """The routing headers of a 2026-07-28 request for ``body``."""
    from portcullis.wire.mcp import NAME_PARAM

    method = body.get("method")
    h = {
        "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": STATELESS_VERSION,
    }
    if isinstance(method, str):
        h["Mcp-Method"] = method
        key = NAME_PARAM.get(method)
        params = body.get("params")
        if key is not None and isinstance(params, dict) and isinstance(params.get(key), str):
            h["Mcp-Name"] = encode_header_value(params[key])
    return h


def encode_header_value(value: str) -> str:
    """Plain if printable ASCII without surrounding space, else ``=?base64?…?=`` of the UTF-8 bytes."""
    import base64

    if value.isascii() and value.isprintable() and value == value.strip():
        return value
    return "=?base64?" + base64.b64encode(value.encode()).decode("ascii") + "?="


ENVELOPE_KEYS = frozenset({META_VERSION_KEY, CLIENT_CAPABILITIES_KEY, CLIENT_INFO_KEY, LOG_LEVEL_KEY})


def rewrite_request(body: JsonObject, new_id: str) -> tuple[JsonObject, object]:
    """A 2026-07-28 request made fit for a shared session-era upstream session.

    It gets a gateway-unique id (and progress token), and loses the per-request envelope keys in ``_meta``, which a
    session-era server may refuse. Returns it and the client's progress token.
    """
    out = {**body, "id": new_id}
    params = body.get("params")
    old_token: object = None
    if isinstance(params, dict):
        meta = params.get("_meta")
        if isinstance(meta, dict):
            new_meta = {k: v for k, v in meta.items() if k not in ENVELOPE_KEYS}
            if "progressToken" in meta:
                old_token = meta["progressToken"]
                new_meta["progressToken"] = new_id
            new_params = {**params, "_meta": new_meta}
            if not new_meta:
                del new_params["_meta"]
            out["params"] = new_params
    return out, old_token
