"""The pure parts of `portcullis connect`: stdin line framing, message classification, stdout lines, headers."""

from __future__ import annotations

import json

from portcullis.cli.connect import (
    LineSplitter,
    Oversize,
    _id_key,
    _init_version,
    error_line,
    is_initialize,
    one_line,
    request_ids,
    response_ids,
    stateless_headers,
)
from portcullis.wire.mcp import decode_header_value


def lines(items: list[bytes | Oversize]) -> list[object]:
    return [("OVERSIZE", i.size) if isinstance(i, Oversize) else i for i in items]


def test_lines_across_chunks_crlf_and_blanks() -> None:
    s = LineSplitter(100)
    assert s.feed(b'{"a":') == []
    assert s.feed(b'1}\r\n\n  \n{"b":2}\n{"c"') == [b'{"a":1}', b'{"b":2}']
    assert s.feed(b":3}\n") == [b'{"c":3}']
    assert s.end() == []


def test_last_line_without_newline_counts_at_eof() -> None:
    s = LineSplitter(100)
    assert s.feed(b'{"a":1}') == []
    assert s.end() == [b'{"a":1}']


def test_oversize_lines_are_dropped_once_and_memory_stays_bounded() -> None:
    s = LineSplitter(10)
    out = s.feed(b"x" * 25)
    assert lines(out) == [("OVERSIZE", 25)]
    assert s.feed(b"y" * 1000) == []  # still the same line: skipped, not buffered
    assert s.feed(b'zz\n{"ok":1}\n') == [b'{"ok":1}']
    assert lines(s.feed(b"0123456789AB\n{}\n")) == [("OVERSIZE", 12), b"{}"]
    assert s.feed(b"0123456789\n") == [b"0123456789"]  # exactly the limit is fine
    assert s.feed(b"0123456789\r") == []  # a line of exactly the limit whose \r\n is split across reads
    assert s.feed(b"\n") == [b"0123456789"]
    assert s.feed(b"z" * 11) == []
    assert lines(s.end()) == [("OVERSIZE", 11)]  # an oversize tail at EOF is reported, not relayed


def test_request_and_response_ids() -> None:
    req = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    res = {"jsonrpc": "2.0", "id": "s1", "result": {}}
    err = {"jsonrpc": "2.0", "id": 2, "error": {"code": 1, "message": "x"}}
    assert request_ids(req) == [1] and request_ids(note) == [] and request_ids(res) == []
    assert request_ids([req, note, {**req, "id": "b"}]) == [1, "b"]
    assert response_ids([res, err, req]) == ["s1", 2]
    assert is_initialize({"jsonrpc": "2.0", "id": 0, "method": "initialize"})
    assert not is_initialize({"jsonrpc": "2.0", "method": "initialize"})


def test_ids_keep_their_type() -> None:
    assert _id_key(1) != _id_key("1")
    assert _id_key(1) != _id_key(True)
    assert _id_key(None) == _id_key(None)


def test_stdout_lines() -> None:
    raw = b'{"jsonrpc":"2.0", "id":1,  "result":{"z":1,"a":2}}'
    assert one_line(raw)[0] == raw  # untouched: key order, spacing
    pretty = json.dumps({"jsonrpc": "2.0", "id": 1, "result": {"text": "a\nb"}}, indent=2).encode()
    line, body = one_line(pretty)
    assert b"\n" not in line and json.loads(line) == body and body["result"]["text"] == "a\nb"
    assert json.loads(error_line(None, -32700, "Parse error")) == {
        "jsonrpc": "2.0",
        "id": None,
        "error": {"code": -32700, "message": "Parse error"},
    }
    assert json.loads(error_line(3, -32600, "x", {"login": "y"}))["error"]["data"] == {"login": "y"}


def test_init_version_from_json_or_sse() -> None:
    body = b'{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"2025-06-18"}}'
    assert _init_version(body) == "2025-06-18"
    assert _init_version(b"event: message\nid: 1.1\ndata: " + body + b"\n\n") == "2025-06-18"
    assert _init_version(b'{"jsonrpc":"2.0","id":1,"error":{"code":1,"message":"no"}}') is None


def test_stateless_requests_mirror_the_body_in_headers() -> None:
    meta = {"io.modelcontextprotocol/protocolVersion": "2026-07-28"}
    call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "echo", "_meta": meta}}
    assert stateless_headers(call) == {
        "MCP-Protocol-Version": "2026-07-28",
        "Mcp-Method": "tools/call",
        "Mcp-Name": "echo",
    }
    read = {"jsonrpc": "2.0", "id": 2, "method": "resources/read", "params": {"uri": "test://ü", "_meta": meta}}
    name = stateless_headers(read)["Mcp-Name"]
    assert name.startswith("=?base64?") and decode_header_value(name) == "test://ü"
    session_era = {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "echo"}}
    assert stateless_headers(session_era) == {}
    assert stateless_headers({"jsonrpc": "2.0", "id": 4, "result": {}}) == {}
