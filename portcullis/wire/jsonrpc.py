"""JSON-RPC 2.0 envelopes that keep their original bytes.

A :class:`Message` is parsed once (orjson) and keeps ``raw``: the exact bytes that arrived. A proxy forwards
``raw`` untouched unless a stage changed the message, in which case :meth:`Message.replace` re-encodes it. Ids are
kept as they came (string or number, never coerced).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

import orjson

from portcullis import errors

JsonObject = dict[str, Any]
MsgId = str | int | float | None


class Kind(enum.Enum):
    REQUEST = "request"
    NOTIFICATION = "notification"
    RESULT = "result"
    ERROR = "error"

    @property
    def is_response(self) -> bool:
        return self is Kind.RESULT or self is Kind.ERROR


@dataclass(slots=True)
class Message:
    """One JSON-RPC message with its original bytes."""

    raw: bytes
    body: JsonObject
    kind: Kind
    modified: bool = field(default=False)

    @property
    def id(self) -> MsgId:
        mid: MsgId = self.body.get("id")
        return mid

    @property
    def method(self) -> str | None:
        m = self.body.get("method")
        return m if isinstance(m, str) else None

    @property
    def params(self) -> JsonObject:
        p = self.body.get("params")
        return p if isinstance(p, dict) else {}

    def replace(self, body: JsonObject) -> None:
        """Swap in a changed body; the raw bytes are re-encoded from it."""
        self.body = body
        self.raw = orjson.dumps(body)
        self.modified = True


def classify(obj: object) -> Kind:
    """Say what kind of JSON-RPC message ``obj`` is, or raise ProtocolError(400, INVALID_REQUEST)."""
    if not isinstance(obj, dict):
        raise errors.ProtocolError(400, errors.INVALID_REQUEST, "Invalid Request: a JSON-RPC message must be an object")
    if obj.get("jsonrpc") != "2.0":
        raise errors.ProtocolError(400, errors.INVALID_REQUEST, 'Invalid Request: "jsonrpc" must be "2.0"')
    method = obj.get("method")
    has_id = "id" in obj
    if has_id:
        mid = obj["id"]
        if mid is not None and (isinstance(mid, bool) or not isinstance(mid, str | int | float)):
            raise errors.ProtocolError(400, errors.INVALID_REQUEST, "Invalid Request: id must be a string or a number")
    if method is not None:
        if not isinstance(method, str) or not method:
            raise errors.ProtocolError(
                400, errors.INVALID_REQUEST, "Invalid Request: method must be a non-empty string"
            )
        params = obj.get("params")
        if params is not None and not isinstance(params, dict | list):
            raise errors.ProtocolError(
                400, errors.INVALID_REQUEST, "Invalid Request: params must be an object or array"
            )
        if not has_id:
            return Kind.NOTIFICATION
        if obj["id"] is None:
            raise errors.ProtocolError(400, errors.INVALID_REQUEST, "Invalid Request: a request id must not be null")
        return Kind.REQUEST
    if "result" in obj and "error" not in obj and has_id:
        return Kind.RESULT
    if "error" in obj and "result" not in obj and has_id:
        err = obj["error"]
        if not isinstance(err, dict) or not isinstance(err.get("code"), int) or not isinstance(err.get("message"), str):
            raise errors.ProtocolError(400, errors.INVALID_REQUEST, "Invalid Request: malformed error object")
        return Kind.ERROR
    raise errors.ProtocolError(
        400, errors.INVALID_REQUEST, "Invalid Request: not a request, notification or response (method/result/error)"
    )


def parse_body(raw: bytes) -> list[Message] | Message:
    """Parse an HTTP body: one message, or a batch (a non-empty list). Raises ProtocolError."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise errors.ProtocolError(400, errors.PARSE_ERROR, f"Parse error: {_why(exc)}") from None
    if isinstance(obj, list):
        if not obj:
            raise errors.ProtocolError(400, errors.INVALID_REQUEST, "Invalid Request: empty batch")
        return [Message(orjson.dumps(item), item, classify(item)) for item in obj]
    return Message(raw, obj, classify(obj))


def parse_one(raw: bytes) -> Message:
    """Parse one message from an upstream (SSE data or JSON body). Raises ProtocolError on garbage."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise errors.ProtocolError(502, errors.PARSE_ERROR, f"Parse error: {_why(exc)}") from None
    return Message(raw, obj, classify(obj))


def _why(exc: orjson.JSONDecodeError) -> str:
    return str(exc.args[0]) if exc.args else "invalid JSON"


def error_body(msg_id: MsgId, code: int, message: str, data: object | None = None) -> JsonObject:
    err: JsonObject = {"code": code, "message": message}
    if data is not None:
        err["data"] = data
    return {"jsonrpc": "2.0", "id": msg_id, "error": err}


def error_message(msg_id: MsgId, code: int, message: str, data: object | None = None) -> Message:
    body = error_body(msg_id, code, message, data)
    return Message(orjson.dumps(body), body, Kind.ERROR)
