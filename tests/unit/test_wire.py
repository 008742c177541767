from __future__ import annotations

import pytest

from portcullis import errors
from portcullis.wire import sse
from portcullis.wire.jsonrpc import Kind, Message, parse_body, parse_one
from portcullis.wire.mcp import accepts, check_stateless_request, decode_header_value, name_of


def test_raw_bytes_are_kept_untouched() -> None:
    raw = b'{"id": 7.0, "jsonrpc":"2.0",  "method":"tools/call","params":{"z":1,"a":2,"x-unknown":[1]}}'
    msg = parse_body(raw)
    assert isinstance(msg, Message)
    assert msg.raw is raw and msg.kind is Kind.REQUEST and msg.id == 7.0 and isinstance(msg.id, float)


def test_replace_reencodes_and_marks_modified() -> None:
    msg = parse_one(b'{"jsonrpc":"2.0","id":"a","result":{"k":1}}')
    msg.replace({**msg.body, "result": {"k": 2}})
    assert msg.modified and b'"k":2' in msg.raw


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"{", errors.PARSE_ERROR),
        (b"[]", errors.INVALID_REQUEST),
        (b"42", errors.INVALID_REQUEST),
        (b'{"jsonrpc":"2.0"}', errors.INVALID_REQUEST),
        (b'{"jsonrpc":"1.0","id":1,"method":"x"}', errors.INVALID_REQUEST),
        (b'{"jsonrpc":"2.0","id":true,"method":"x"}', errors.INVALID_REQUEST),
        (b'{"jsonrpc":"2.0","id":null,"method":"x"}', errors.INVALID_REQUEST),
        (b'{"jsonrpc":"2.0","id":1,"method":""}', errors.INVALID_REQUEST),
        (b'{"jsonrpc":"2.0","id":1,"method":"x","params":3}', errors.INVALID_REQUEST),
        (b'{"jsonrpc":"2.0","id":1,"result":1,"error":{}}', errors.INVALID_REQUEST),
        (b'{"jsonrpc":"2.0","id":1,"error":{"code":"x","message":"m"}}', errors.INVALID_REQUEST),
    ],
)
def test_bad_envelopes(raw: bytes, code: int) -> None:
    with pytest.raises(errors.ProtocolError) as exc:
        parse_body(raw)
    assert exc.value.code == code and exc.value.http_status == 400


def test_kinds_and_batches() -> None:
    batch = parse_body(b'[{"jsonrpc":"2.0","method":"n"},{"jsonrpc":"2.0","id":1,"error":{"code":1,"message":"m"}}]')
    assert isinstance(batch, list) and [m.kind for m in batch] == [Kind.NOTIFICATION, Kind.ERROR]


def test_sse_parser_handles_split_frames_and_comments() -> None:
    p = sse.SSEParser()
    frames = b': keepalive\n\nid: 1\nevent: message\ndata: {"a":\ndata: 1}\n\nretry: 500\nid: 2\ndata: \n\n'
    out: list[sse.Event] = []
    for i in range(len(frames)):  # one byte at a time
        out += p.feed(frames[i : i + 1])
    assert [(e.id, e.data, e.retry) for e in out] == [("1", b'{"a":\n1}', None), ("2", b"", 500)]


def test_sse_parser_crlf_and_bound() -> None:
    assert sse.SSEParser().feed(b"data: x\r\n\r\n")[0].data == b"x"
    with pytest.raises(sse.SSEParseError):
        sse.SSEParser(max_event=10).feed(b"data: " + b"x" * 20 + b"\n")
    with pytest.raises(sse.SSEParseError):
        sse.SSEParser(max_event=10).feed(b"data: " + b"x" * 20)


def test_sse_encode_round_trips() -> None:
    frame = sse.encode(b'{"a":1}', "3.4")
    ev = sse.SSEParser().feed(frame)[0]
    assert (ev.id, ev.event, ev.data) == ("3.4", "message", b'{"a":1}')


META = {"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}}


def stateless(method: str = "tools/call", **params: object) -> Message:
    m = parse_one(
        __import__("orjson").dumps({"jsonrpc": "2.0", "id": 3, "method": method, "params": {**params, "_meta": META}})
    )
    return m


def test_stateless_ladder_accepts_matching_headers() -> None:
    h = {"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call", "Mcp-Name": "echo"}
    assert check_stateless_request(stateless(name="echo"), h) == "2026-07-28"


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({"Mcp-Method": "tools/call", "Mcp-Name": "echo"}, errors.HEADER_MISMATCH),
        (
            {"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/list", "Mcp-Name": "echo"},
            errors.HEADER_MISMATCH,
        ),
        (
            {"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call", "Mcp-Name": "other"},
            errors.HEADER_MISMATCH,
        ),
        ({"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call"}, errors.HEADER_MISMATCH),
    ],
)
def test_stateless_ladder_rejects_mismatches(headers: dict[str, str], code: int) -> None:
    with pytest.raises(errors.ProtocolError) as exc:
        check_stateless_request(stateless(name="echo"), headers)
    assert exc.value.code == code and exc.value.msg_id == 3


def test_stateless_ladder_missing_meta_and_unknown_version() -> None:
    m = parse_one(b'{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{}}')
    with pytest.raises(errors.ProtocolError) as exc:
        check_stateless_request(m, {"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/list"})
    assert exc.value.code == errors.INVALID_PARAMS
    m = parse_one(
        b'{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{'
        b'"io.modelcontextprotocol/protocolVersion":"2099-01-01","io.modelcontextprotocol/clientCapabilities":{}}}}'
    )
    with pytest.raises(errors.ProtocolError) as exc:
        check_stateless_request(m, {"MCP-Protocol-Version": "2099-01-01", "Mcp-Method": "tools/list"})
    assert exc.value.code == errors.UNSUPPORTED_PROTOCOL_VERSION
    assert exc.value.data == {"supported": ["2026-07-28"], "requested": "2099-01-01"}


def test_header_values_may_be_base64_encoded() -> None:
    assert decode_header_value("=?base64?w6ljaG8=?=") == "écho"
    assert decode_header_value("=?base64?not base64?=") is None
    assert decode_header_value("plain") == "plain"


def test_accepts_and_name_of() -> None:
    assert accepts("application/json, text/event-stream", "application/json", "text/event-stream")
    assert accepts("*/*", "application/json")
    assert not accepts("application/json", "application/json", "text/event-stream")
    assert name_of(parse_one(b'{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"a://b"}}')) == "a://b"
