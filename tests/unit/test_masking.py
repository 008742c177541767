"""The masking core: walker, masker, replacements, sealing, the stage and its config (no sockets)."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest

from portcullis import errors
from portcullis.config.model import MaskingConfig
from portcullis.flow import Direction, Flow, Outcome
from portcullis.masking import Budget, MaskingError, default_detector
from portcullis.masking.classes import DEFAULT_ON, expand
from portcullis.masking.masker import Masker, Override, Profile
from portcullis.masking.rules import key_class
from portcullis.masking.seal import Sealer, SealError, keygen, load_private, open_sealed
from portcullis.masking.walker import collect
from portcullis.pipeline.mask import MaskingFailed, MaskStage, build_masker
from portcullis.pipeline.record import RecordStage
from portcullis.wire.jsonrpc import Kind, Message
from portcullis.wire.mcp import Era
from tests.unit.test_config import problems

GH = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"
CARD = "4539 1488 0343 6467"


def masker(**kw: Any) -> Masker:
    return Masker(Profile(DEFAULT_ON, **kw))


def mask(m: Masker, body: dict[str, Any], part: str = "result", groups: frozenset[str] = frozenset()) -> Any:
    return m.mask(body, part, m.plan("srv", groups), "session-1")


def test_structured_content_and_its_text_twin_mask_the_same_way() -> None:
    rows = {
        "rows": [
            {"email": "ann@example.com", "password": "correct-Horse-9", "note": f"token {GH}", "card": 4539148803436467}
        ]
    }
    body = {"result": {"content": [{"type": "text", "text": orjson.dumps(rows).decode()}], "structuredContent": rows}}
    res = mask(masker(), body)
    twin = orjson.loads(body["result"]["content"][0]["text"])
    assert twin == body["result"]["structuredContent"]  # the twin is written again from the masked structure
    row = twin["rows"][0]
    assert row == {
        "email": "[REDACTED:email]",
        "password": "[REDACTED:password_assignment]",
        "note": "token [REDACTED:github_token]",
        "card": "[REDACTED:credit_card]",  # a card sent as a JSON number is masked too (as a string)
    }
    assert {(m["class"], m["path"]) for m in res.masked} >= {
        ("email", "result.structuredContent.rows[0].email"),
        ("password_assignment", "result.structuredContent.rows[0].password"),
        ("github_token", "result.structuredContent.rows[0].note"),
        ("credit_card", "result.structuredContent.rows[0].card"),
    }


def test_a_twin_serialised_another_way_still_matches() -> None:
    import json

    sc = {"signing_key": "Zx8Qw2Er6Ty0Ui4\u00d6!pAsDf9", "path": "a/b"}
    body = {"result": {"content": [{"type": "text", "text": json.dumps(sc, indent=2)}], "structuredContent": sc}}
    mask(masker(), body)
    text = body["result"]["content"][0]["text"]
    assert "Zx8Qw2" not in text and json.loads(text) == body["result"]["structuredContent"]


def test_a_value_found_once_is_masked_wherever_else_it_appears() -> None:
    body = {
        "result": {
            "content": [{"type": "text", "text": "password=Tr0ub4dor&3x"}, {"type": "text", "text": "Tr0ub4dor&3x"}]
        }
    }
    mask(masker(), body)
    assert [c["text"] for c in body["result"]["content"]] == [
        "password=[REDACTED:password_assignment]",
        "[REDACTED:password_assignment]",
    ]


def test_protocol_ids_and_binary_are_left_alone_everything_else_is_walked() -> None:
    body = {
        "result": {
            "_meta": {"note": "ann@example.com", "progressToken": "ann@example.com"},
            "content": [
                {"type": "image", "data": "ann@example.com", "mimeType": "image/png"},
                {
                    "type": "resource",
                    "resource": {
                        "uri": "x://1",
                        "mimeType": "application/octet-stream",
                        "blob": "YW5uQGV4YW1wbGUuY29t",
                    },
                },
            ],
            "nextCursor": "ann@example.com",
            "tools": [{"name": "t", "inputSchema": {"examples": ["ann@example.com"]}}],
            "structured": {"type": GH, "blob": "password=Hunter2Secret!"},
        }
    }
    mask(masker(), body)
    r = body["result"]
    assert r["_meta"] == {"note": "[REDACTED:email]", "progressToken": "ann@example.com"}
    assert (
        r["content"][0]["data"] == "ann@example.com" and r["content"][1]["resource"]["blob"] == "YW5uQGV4YW1wbGUuY29t"
    )
    assert r["nextCursor"] == "ann@example.com"
    assert r["tools"][0]["inputSchema"]["examples"] == ["[REDACTED:email]"]
    assert r["structured"] == {"type": "[REDACTED:github_token]", "blob": "password=[REDACTED:password_assignment]"}


def test_text_blobs_are_decoded_masked_and_re_encoded() -> None:
    blob = base64.b64encode(b"contact: ann@example.com").decode()
    body = {"result": {"contents": [{"uri": "file:///a.txt", "mimeType": "text/plain", "blob": blob}]}}
    mask(masker(), body)
    assert base64.b64decode(body["result"]["contents"][0]["blob"]) == b"contact: [REDACTED:email]"


def test_errors_and_notifications_are_walked_too() -> None:
    err = {"error": {"code": -1, "message": f"auth failed for {GH}", "data": {"card": CARD}}}
    mask(masker(), err, "error")
    assert GH not in orjson.dumps(err).decode() and CARD not in orjson.dumps(err).decode()
    note = {"method": "notifications/message", "params": {"level": "info", "data": "sent to ann@example.com"}}
    mask(masker(), note, "params")
    assert note["params"]["data"] == "sent to [REDACTED:email]"


def test_modes_partial_and_pseudonym() -> None:
    m = masker(modes={"credit_card": "partial", "email": "pseudonym", "github_token": "partial"})
    body = {"result": {"a": CARD, "b": "ann@example.com", "c": "ann@example.com", "d": GH}}
    mask(m, body)
    r = body["result"]
    assert r["a"] == "**** **** **** 6467"
    assert r["b"] == r["c"] and r["b"].startswith("user-") and r["b"].endswith("@masked.invalid")
    assert r["d"] == f"[REDACTED:github_token ghp_...{GH[-4:]}]"
    other = {"result": {"b": "ann@example.com"}}
    m.mask(other, "result", m.plan("srv", frozenset()), "session-2")
    assert other["result"]["b"] != r["b"]  # keyed per session


def test_unmasked_for_groups_and_first_matching_override() -> None:
    m = Masker(
        Profile(DEFAULT_ON, unmasked_for={"email": frozenset({"support"})}),
        overrides=[Override(frozenset({"sre"}), frozenset({"db"}), Profile(frozenset({"email"}), mode="partial"))],
    )
    text = f"ann@example.com {GH}"
    as_support = {"result": {"t": text}}
    m.mask(as_support, "result", m.plan("srv", frozenset({"support"})), None)
    assert as_support["result"]["t"] == "ann@example.com [REDACTED:github_token]"
    as_sre_on_db = {"result": {"t": text}}
    m.mask(as_sre_on_db, "result", m.plan("db", frozenset({"sre"})), None)
    assert as_sre_on_db["result"]["t"] == f"a***@example.com {GH}"
    as_sre_elsewhere = {"result": {"t": text}}
    m.mask(as_sre_elsewhere, "result", m.plan("web", frozenset({"sre"})), None)
    assert as_sre_elsewhere["result"]["t"] == "[REDACTED:email] [REDACTED:github_token]"


def test_strings_containing_nul_are_still_masked() -> None:
    body = {"result": {"t": "a\x00ann@example.com\x00b", "u": "bob@example.org"}}
    mask(masker(), body)
    assert body["result"] == {"t": "a\x00[REDACTED:email]\x00b", "u": "[REDACTED:email]"}


def test_non_ascii_text_keeps_offsets_right() -> None:
    body = {"result": {"t": "Grüße, José — mail josé.ünïcode@example.com or ann@example.com ✓"}}
    mask(masker(), body)
    assert body["result"]["t"] == "Grüße, José — mail [REDACTED:email] or [REDACTED:email] ✓"
    found = default_detector().find("ümlaut ann@example.com")
    assert [(f.start, f.end) for f in found] == [(7, 22)]


def test_too_deep_or_too_many_candidates_fails_closed() -> None:
    deep: Any = "ann@example.com"
    for _ in range(100):
        deep = [deep]
    with pytest.raises(MaskingError, match="nests deeper"):
        mask(masker(), {"result": {"x": deep}})
    many = {"result": {"t": " ".join(f"u{i}@example.com" for i in range(200))}}
    with pytest.raises(MaskingError, match="budget"):
        Masker(Profile(DEFAULT_ON), max_candidates=50).mask(
            many, "result", Masker(Profile(DEFAULT_ON)).plan("s", frozenset()), None
        )
    with pytest.raises(MaskingError):
        default_detector().find_bytes(b"a@example.com " * 100, Budget(10))


def test_key_names_decide_the_context_class() -> None:
    assert key_class("DB_PASSWORD") == "password_assignment"
    assert key_class("clientSecret") == "password_assignment"
    assert key_class("signing_key") == "high_entropy_secret"
    for not_secret in ("max_tokens", "token_count", "secretName", "password_min_length", "primary_key", "cache_key"):
        assert key_class(not_secret) is None, not_secret


def test_classes_expand_kinds_and_reject_unknown_names() -> None:
    assert "email" in expand(["pii"]) and "github_token" not in expand(["pii"])
    assert "ip_address" not in expand(["pii"]) and "ip_address" in expand(["all"])
    with pytest.raises(ValueError, match="unknown masking class 'emial'"):
        expand(["emial"])


def test_seal_round_trip_and_tamper_evidence() -> None:
    priv_pem, pub_pem = keygen()
    sealer = Sealer.from_pem(pub_pem)
    blob = sealer.seal(b'{"secret": "x"}')
    assert b"secret" not in blob
    assert open_sealed(load_private(priv_pem), blob) == b'{"secret": "x"}'
    with pytest.raises(SealError):
        open_sealed(load_private(priv_pem), blob[:-1] + bytes([blob[-1] ^ 1]))
    with pytest.raises(SealError):
        open_sealed(load_private(keygen()[0]), blob)


def _flow(resp_body: dict[str, Any]) -> Flow:
    req = Message(b"{}", {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "t"}}, Kind.REQUEST)
    flow = Flow("srv", Era.SESSION, Direction.C2S, req)
    flow.set_upstream_response(Message(orjson.dumps(resp_body), resp_body, Kind.RESULT))
    return flow


def test_the_stage_masks_records_and_seals() -> None:
    priv_pem, pub_pem = keygen()
    stage = MaskStage(build_masker(MaskingConfig()), Sealer.from_pem(pub_pem))
    body = {"jsonrpc": "2.0", "id": 1, "result": {"content": [{"type": "text", "text": f"key {GH}"}]}}
    original = orjson.dumps(body)
    flow = _flow(body)
    rec = RecordStage()
    rec.on_request(flow)
    stage.on_response(flow)
    rec.on_response(flow)
    assert flow.response is not None and GH.encode() not in flow.response.raw
    stored = flow.records[-1]
    assert stored.payload == flow.response.raw and GH.encode() not in (stored.payload or b"")
    assert orjson.loads(stored.masked or "[]") == [
        {"class": "github_token", "path": "result.content[0].text", "count": 1}
    ]
    assert open_sealed(load_private(priv_pem), stored.sealed or b"") == original


def test_the_stage_fails_closed_with_a_precise_error() -> None:
    stage = MaskStage(Masker(Profile(DEFAULT_ON), max_depth=3))
    flow = _flow({"jsonrpc": "2.0", "id": 1, "result": {"a": {"b": {"c": {"d": {"e": "ann@example.com"}}}}}})
    stage.on_response(flow)
    assert flow.response is not None and flow.response.kind is Kind.ERROR
    assert flow.response.body["error"]["code"] == errors.STAGE_FAILED
    assert flow.response.body["error"]["message"].startswith("Response blocked: it could not be masked")
    assert b"ann@example.com" not in flow.response.raw and flow.outcome is Outcome.FAILED
    note = Message(
        b"",
        {"jsonrpc": "2.0", "method": "notifications/message", "params": {"a": {"b": {"c": {"d": {}}}}}},
        Kind.NOTIFICATION,
    )
    with pytest.raises(MaskingFailed):
        stage.on_server_message(Flow("srv", Era.SESSION, Direction.S2C, note))


def test_disabled_masking_builds_no_masker() -> None:
    assert build_masker(MaskingConfig(enabled=False)) is None


def test_walker_is_iterative_and_in_document_order() -> None:
    segs = collect({"a": "1", "b": ["2", {"c": "3"}], "d": "4"}, ("result",), 64)
    assert sorted(segs.texts) == ["1", "2", "3", "4"]
    paths = {segs.path(i) for i in range(len(segs))}
    assert paths == {("result", "a"), ("result", "b", 0), ("result", "b", 1, "c"), ("result", "d")}


def test_config_names_the_bad_masking_key() -> None:
    assert "masking.modes.emial" in " ".join(problems("masking: {modes: {emial: partial}}\n"))
    assert "masking.rules.0.pattern" in " ".join(problems("masking: {rules: [{name: x, pattern: '(unclosed'}]}\n"))
    assert "masking.servers.nope" in " ".join(problems("masking: {servers: {nope: {mode: partial}}}\n"))
    assert "'mask' must come after 'record'" in " ".join(problems("pipeline: [mask, record, bind, authz]\n"))


@pytest.mark.parametrize("tail", [".", "-", "", " ", ".\n"])
def test_a_card_or_address_at_the_very_end_of_a_message_is_masked(tail: str) -> None:
    # the last string of a message has nothing after it: a rule may not need a character there
    body = {"result": {"t": f"card {CARD}{tail}"}}
    mask(masker(), body)
    assert body["result"]["t"] == f"card [REDACTED:credit_card]{tail}"
    ip = default_detector(include=("ip_address",)).find(f"from 10.1.2.3{tail}")
    assert [f.cls for f in ip] == ["ip_address"]


def test_review_findings_stay_fixed() -> None:
    """Each case a review found: a card before another number, NUL next to a password key, a UTF-16 blob, a
    case-folded key, partial hints on non-ASCII text, masking twice, and a long 'redacted' value (was quadratic)."""
    import time

    m = masker()
    for text in (f"Card: {CARD} 12/27", f"card {CARD.replace(' ', '')} 123"):
        body = {"result": {"t": text}}
        mask(m, body)
        assert CARD.replace(" ", "")[-8:] not in body["result"]["t"].replace(" ", ""), body
    nul = {"result": {"structuredContent": {"password": "Tr0ub4dor&3xyz", "n": "a\x00b"}}}
    mask(m, nul)
    assert nul["result"]["structuredContent"] == {"password": "[REDACTED:password_assignment]", "n": "a\x00b"}
    blob = base64.b64encode(f"token {GH}".encode("utf-16")).decode()
    b16 = {"result": {"contents": [{"uri": "f", "mimeType": "text/plain; charset=utf-16", "blob": blob}]}}
    mask(m, b16)
    assert base64.b64decode(b16["result"]["contents"][0]["blob"]).decode("utf-16") == "token [REDACTED:github_token]"
    folded = {"result": {"t": "pa\u017fsword=Hunter2Secret!"}}  # RE2's (?i) folds the long s into the key:
    mask(m, folded)  # this used to raise UnicodeDecodeError (the message was blocked); now it is simply scanned
    partial = masker(modes={"email": "partial", "password_assignment": "partial"})
    p = {"result": {"t": "contact émile@example.com password=パスワードは秘密です日本"}}
    mask(partial, p)
    assert p["result"]["t"] == "contact é***@example.com password=[REDACTED:password_assignment]"
    for mode in ("label", "partial", "pseudonym"):
        mm = masker(mode=mode)
        once = {"result": {"t": f"password=Secret-Value-99 mail ann@example.com key {GH}"}}
        mask(mm, once)
        twice = {"result": {"t": once["result"]["t"]}}
        mask(mm, twice)
        assert twice["result"]["t"] == once["result"]["t"], mode
    started = time.monotonic()
    mask(m, {"result": {"structuredContent": {"password": "redacted" * 12_000 + "!"}}})
    assert time.monotonic() - started < 2.0


def test_config_catches_what_would_fail_at_start() -> None:
    found = " ".join(problems("masking: {phone_region: UK, pseudonym_key_env: PCL_NOT_SET_ANYWHERE}\n"))
    assert "'UK' is not a region" in found and "PCL_NOT_SET_ANYWHERE is not set" in found
    found = " ".join(problems("masking: {forensic: {public_key_file: /nonexistent/forensic.pub}}\n"))
    assert "masking.forensic.public_key_file" in found and "cannot read it" in found
    found = " ".join(problems("masking: {rules: [{name: pii, pattern: 'x*'}]}\n"))
    assert "built-in name" in found and "matches the empty string" in found


def test_a_custom_rule_of_a_kind_comes_with_that_kind() -> None:
    m = build_masker(
        MaskingConfig.model_validate(
            {"classes": ["pii"], "rules": [{"name": "employee_id", "pattern": "EMP-[0-9]{6}", "kind": "pii"}]}
        )
    )
    assert m is not None
    body = {"result": {"t": "EMP-123456 and ann@example.com"}}
    m.mask(body, "result", m.plan("s", frozenset()), "x")
    assert body["result"]["t"] == "[REDACTED:employee_id] and [REDACTED:email]"


def test_national_phone_numbers_of_the_configured_region() -> None:
    m = build_masker(MaskingConfig(phone_region="GB"))
    assert m is not None
    body = {"result": {"t": "call 020 7946 0958 or 07911 123456, build 2026-11-24 v1.2.3, port 0800"}}
    m.mask(body, "result", m.plan("s", frozenset()), "x")
    assert (
        body["result"]["t"]
        == "call [REDACTED:phone_number] or [REDACTED:phone_number], build 2026-11-24 v1.2.3, port 0800"
    )


def test_a_card_number_right_after_other_digits_is_still_found() -> None:
    """Found by the fuzz suite: "qty 2 4111 1111 1111 1111" made one candidate starting at the 2, which failed the
    checks as a whole and in every trailing cut; the candidate is now tried again from after each separator."""
    from portcullis.masking import default_detector

    d = default_detector()
    for text, card in (
        ("qty 2 4111 1111 1111 1111 2", "4111 1111 1111 1111"),
        ("2-4111-1111-1111-1111", "4111-1111-1111-1111"),
        ("ref 3 5500 0000 0000 0004", "5500 0000 0000 0004"),
    ):
        found = [text[f.start : f.end] for f in d.find(text) if f.cls == "credit_card"]
        assert found == [card], (text, found)
    assert not [f for f in d.find("2 4111 1111 1111 1112") if f.cls == "credit_card"]  # Luhn still decides
