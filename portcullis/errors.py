"""Errors and JSON-RPC error codes.

The hierarchy is small on purpose::

    PortcullisError
    ├── ConfigError            a configuration file is invalid (file, line, key, what was expected)
    ├── ProtocolError          a client message breaks JSON-RPC or MCP rules -> HTTP 4xx + JSON-RPC error
    ├── UpstreamError          the upstream server failed, hung, or spoke garbage -> JSON-RPC error to the caller
    ├── StoreError             the recording store cannot be written -> the message is refused (fail closed)
    └── StageError             a pipeline stage raised -> the flow fails closed with a JSON-RPC error

Every error that reaches a client says what happened in words that name no secret.
"""

from __future__ import annotations

# JSON-RPC 2.0 standard codes
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603

# MCP-defined codes
HEADER_MISMATCH = -32020  # 2026-07-28: Mcp-Method / Mcp-Name header disagrees with the body
UNSUPPORTED_PROTOCOL_VERSION = -32022  # 2026-07-28: data.supported lists the versions we speak
URL_ELICITATION_REQUIRED = -32042

# Gateway codes (implementation-defined server error range -32000..-32099)
UPSTREAM_UNAVAILABLE = -32001
UPSTREAM_PROTOCOL_ERROR = -32002
UPSTREAM_TIMEOUT = -32003
STAGE_FAILED = -32004
STORE_UNAVAILABLE = -32005
SESSION_NOT_FOUND = -32006
REQUEST_DENIED = -32010


class PortcullisError(Exception):
    """Base of every error the gateway raises on purpose."""


class ConfigError(PortcullisError):
    """A configuration file is invalid. ``problems`` lists each finding as one line."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class ProtocolError(PortcullisError):
    """A client message breaks the protocol. Answered with ``http_status`` and a JSON-RPC error."""

    def __init__(
        self, http_status: int, code: int, message: str, data: object | None = None, msg_id: str | int | None = None
    ) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.code = code
        self.message = message
        self.data = data
        self.msg_id = msg_id


class UpstreamError(PortcullisError):
    """The upstream failed. ``code`` is one of the UPSTREAM_* codes."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class StoreError(PortcullisError):
    """The recording store could not make a record durable."""


class StageError(PortcullisError):
    """A pipeline stage failed; the flow is blocked."""

    def __init__(self, stage: str, cause: BaseException) -> None:
        super().__init__(f"stage {stage!r} failed: {type(cause).__name__}")
        self.stage = stage
        self.cause = cause
