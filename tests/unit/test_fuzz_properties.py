"""Property-based fuzzing (hypothesis) of what hostile input reaches first: the JSON-RPC parser, the SSE parser, the
header codecs and checks of the 2026-07-28 ladder, and the masking walker. Each property: no exception but the
documented one, no unbounded work, and what must hold of the output (a planted secret never survives masking, a
header value round-trips). The longer coverage-guided run (atheris) is bench/fuzz.py; its figures are in
docs/security.md."""

from __future__ import annotations

import json
from typing import Any

import orjson
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from portcullis import errors
from portcullis.config.model import MaskingConfig
from portcullis.masking import MaskingError
from portcullis.pipeline.mask import build_masker
from portcullis.wire.jsonrpc import Kind, parse_body, parse_one
from portcullis.wire.mcp import accepts, check_stateless_request, decode_header_value, duplicated_routing_header
from portcullis.wire.sse import SSEParseError, SSEParser
from portcullis.wire.translate import encode_header_value

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=40,
)
ids = st.none() | st.integers(-(2**53), 2**53) | st.text(max_size=20) | st.floats() | st.booleans()
methods = st.sampled_from(["tools/call", "tools/list", "initialize", "ping", "resources/read", "x"]) | st.text(
    max_size=20
)


@st.composite
def messages(draw: st.DrawFn) -> dict[str, Any]:
    """Things shaped like JSON-RPC, right and wrong: any subset of the members, any types."""
    out: dict[str, Any] = {}
    if draw(st.booleans()):
        out["jsonrpc"] = draw(st.sampled_from(["2.0", "1.0", 2]) | st.text(max_size=4))
    if draw(st.booleans()):
        out["id"] = draw(ids)
    if draw(st.booleans()):
        out["method"] = draw(methods)
    if draw(st.booleans()):
        out["params"] = draw(json_values)
    if draw(st.booleans()):
        out["result"] = draw(json_values)
    if draw(st.booleans()):
        out["error"] = draw(json_values)
    return out


@FUZZ
@given(st.binary(max_size=512))
def test_the_parser_takes_any_bytes_and_refuses_with_a_json_rpc_error(raw: bytes) -> None:
    try:
        parsed = parse_body(raw)
    except errors.ProtocolError as exc:
        assert exc.http_status == 400 and exc.code in (errors.PARSE_ERROR, errors.INVALID_REQUEST)
        return
    for m in parsed if isinstance(parsed, list) else [parsed]:
        assert isinstance(m.kind, Kind)


@FUZZ
@given(st.one_of(messages(), st.lists(messages(), max_size=4), json_values))
def test_every_json_value_is_classified_and_kept_byte_for_byte(value: Any) -> None:
    raw = orjson.dumps(value)
    try:
        parsed = parse_body(raw)
    except errors.ProtocolError as exc:  # valid JSON, not a message (or an empty batch): Invalid Request, said why
        assert exc.http_status == 400 and exc.code == errors.INVALID_REQUEST and str(exc)
        return
    if isinstance(parsed, list):
        assert [orjson.loads(m.raw) for m in parsed] == value
    else:
        assert parsed.raw == raw and isinstance(parsed.kind, Kind)
    if not isinstance(value, list):
        assert parse_one(raw).raw == raw


@FUZZ
@given(st.lists(st.binary(max_size=64), max_size=12), st.integers(min_value=8, max_value=256))
def test_the_sse_parser_is_bounded_and_split_anywhere_gives_the_same_events(chunks: list[bytes], limit: int) -> None:
    whole = b"".join(chunks)
    results = []
    for pieces in (chunks, [whole]):
        parser = SSEParser(max_event=limit)
        events: list[Any] = []
        try:
            for c in pieces:
                events += parser.feed(c)
        except SSEParseError:
            events = ["refused"]
        results.append([e if e == "refused" else (e.data, e.event, e.id) for e in events])
        assert len(parser._buf) <= limit  # never holds more than one bounded line
    if "refused" not in results[0] and "refused" not in results[1]:
        assert results[0] == results[1]


@FUZZ
@given(st.text(max_size=200))
def test_header_values_round_trip_through_their_encoding(value: str) -> None:
    encoded = encode_header_value(value)
    assert encoded.isascii() and "\r" not in encoded and "\n" not in encoded
    assert decode_header_value(encoded) == value


@FUZZ
@given(st.text(max_size=120) | st.text(max_size=40).map(lambda t: f"=?base64?{t}?="))
@example("=?base64?\ufffd\ufffdZWNobw==?=")  # found by atheris (bench/fuzz.py): non-ASCII in the payload raised
def test_any_header_text_decodes_or_is_refused_but_never_raises(value: str) -> None:
    decoded = decode_header_value(value)
    assert decoded is None or isinstance(decoded, str)
    assert isinstance(accepts(value, "application/json", "text/event-stream"), bool)


@FUZZ
@given(
    messages(),
    st.dictionaries(st.sampled_from(["Mcp-Method", "Mcp-Name", "MCP-Protocol-Version", "X"]), st.text(max_size=30)),
)
def test_the_stateless_ladder_answers_every_request_with_a_decision_or_a_protocol_error(
    body: dict[str, Any], headers: dict[str, str]
) -> None:
    body.setdefault("jsonrpc", "2.0")
    body.setdefault("method", "tools/call")
    body.setdefault("id", 1)
    try:
        msg = parse_one(orjson.dumps(body))
    except errors.ProtocolError as exc:
        assert exc.code == errors.INVALID_REQUEST
        return
    if msg.kind is not Kind.REQUEST:
        return
    try:
        version = check_stateless_request(msg, headers, duplicated_routing_header(list(headers.items())))
    except errors.ProtocolError as exc:
        assert 400 <= exc.http_status < 500 and exc.code < 0
        return
    assert isinstance(version, str)


CARD = "4111 1111 1111 1111"
KEY = "AKIAIOSFODNN7EXAMPLE"
MASKER = build_masker(MaskingConfig())


@st.composite
def results_with_secrets(draw: st.DrawFn) -> tuple[dict[str, Any], list[str]]:
    """A tool result of any shape with secrets planted in some of its strings (structured and text twins too)."""
    planted: list[str] = []

    def plant(s: str) -> str:
        if draw(st.booleans()):
            secret = draw(st.sampled_from([CARD, KEY, "ada@example.com"]))
            planted.append(secret)
            return f"{s} {secret} {s}"
        return s

    tree = draw(json_values)
    strings = st.text(max_size=20).map(plant)
    structured = draw(st.dictionaries(st.text(max_size=8), strings, max_size=4))
    result = {
        "content": [
            {"type": "text", "text": plant(draw(st.text(max_size=30)))},
            {"type": "text", "text": json.dumps(structured)},
        ],
        "structuredContent": structured,
        "_meta": {"x": tree},
        "extra": tree,
    }
    return result, planted


@FUZZ
@given(results_with_secrets())
def test_masking_never_lets_a_planted_secret_through_and_never_fails_but_as_documented(
    case: tuple[dict[str, Any], list[str]],
) -> None:
    result, planted = case
    body = {"jsonrpc": "2.0", "id": 1, "result": result}
    assert MASKER is not None
    try:
        MASKER.mask(body, "result", MASKER.plan("srv", frozenset()), "session")
    except MaskingError:
        return  # too deep or too many candidates: the gateway blocks the message (fail closed)
    text = json.dumps({k: v for k, v in body["result"].items() if k != "_meta"})  # _meta is not masked by design
    for secret in planted:
        assert secret not in text, secret
