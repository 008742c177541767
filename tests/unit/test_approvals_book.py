"""The approval book on a real SQLite store: who may decide, how many must, expiry, and release exactly once."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import Engine

from portcullis.approvals.book import ApprovalBook, ApprovalError, TooManyPending, Voter
from portcullis.approvals.model import Hold, args_digest, covers

S = 1_000_000_000


def hold(args: object = None, who: str = "alice") -> Hold:
    return Hold(
        server="db",
        method="tools/call",
        target="drop_table",
        digest=args_digest(args if args is not None else {"table": "users"}),
        rule="drops-need-approval",
        policy_version="v1",
        approvers=("dba", "sre"),
        requester_key=f"https://idp|{who}",
        requester=f"sub={who}",
        requester_subject=who,
        session_id="s1",
    )


def voter(name: str, *groups: str) -> Voter:
    return Voter(name, f"https://idp|{name}", f"sub={name}", frozenset(groups))


def test_digest_is_canonical() -> None:
    assert args_digest({"a": 1, "b": [1, 2]}) == args_digest({"b": [1, 2], "a": 1})
    assert args_digest({"a": 1}) != args_digest({"a": 2})
    assert args_digest(None) == args_digest({})


def test_one_pending_request_per_call_and_release_exactly_once(engine: Engine) -> None:
    book = ApprovalBook(engine)
    req, created = book.open(hold())
    assert created and book.open(hold()) == (req, False)
    assert book.open(hold({"table": "orders"}))[0]["id"] != req["id"]  # other arguments, other request
    assert book.release(hold()) is None  # pending releases nothing
    assert book.vote(req["id"], voter("bob", "dba"), "approve", "ok")["state"] == "approved"
    assert book.release(hold({"table": "orders"})) is None  # the approval covers its own arguments only
    assert book.release(hold(who="mallory")) is None  # and its own requester only
    released = book.release(hold())
    assert released is not None and released["id"] == req["id"]
    assert book.release(hold()) is None


def test_racing_retries_release_once(engine: Engine) -> None:
    book = ApprovalBook(engine)
    req, _ = book.open(hold())
    book.vote(req["id"], voter("bob", "dba"), "approve", None)
    got: list[object] = []
    threads = [threading.Thread(target=lambda: got.append(book.release(hold()))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert sum(1 for g in got if g is not None) == 1


def test_who_may_decide(engine: Engine) -> None:
    book = ApprovalBook(engine)
    req, _ = book.open(hold())
    with pytest.raises(ApprovalError) as e:
        book.vote(req["id"], voter("alice", "dba"), "approve", None)
    assert e.value.status == 403 and "own call" in e.value.message
    with pytest.raises(ApprovalError) as e:
        book.vote(req["id"], voter("carol", "auditors"), "approve", None)
    assert e.value.status == 403
    with pytest.raises(ApprovalError) as e:
        book.vote("apr_nope", voter("bob", "dba"), "approve", None)
    assert e.value.status == 404
    with pytest.raises(ApprovalError) as e:
        book.vote(req["id"], voter("bob", "dba"), "maybe", None)
    assert e.value.status == 400


def test_two_of_two_and_a_deny_by_anyone_ends_it(engine: Engine) -> None:
    book = ApprovalBook(engine, required=2)
    req, _ = book.open(hold())
    assert book.vote(req["id"], voter("bob", "dba"), "approve", None)["state"] == "pending"
    with pytest.raises(ApprovalError) as e:
        book.vote(req["id"], voter("bob", "dba"), "approve", None)  # the same approver twice counts once
    assert e.value.status == 409
    done = book.vote(req["id"], voter("erin", "sre"), "approve", None)
    assert done["state"] == "approved" and [v["vote"] for v in done["votes"]] == ["approve", "approve"]

    other, _ = book.open(hold({"table": "x"}))
    book.vote(other["id"], voter("bob", "dba"), "approve", None)
    denied = book.vote(other["id"], voter("erin", "sre"), "deny", "no")
    assert denied["state"] == "denied" and denied["reason"] == "no"
    assert book.open(hold({"table": "x"}))[0]["id"] == other["id"]  # a denied call is not asked again at once


def test_expiry_of_pending_and_of_unused_approvals(engine: Engine) -> None:
    book = ApprovalBook(engine, ttl=60, release_window=30)
    t0 = 1_000 * S
    req, _ = book.open(hold(), now_ns=t0)
    with pytest.raises(ApprovalError) as e:
        book.vote(req["id"], voter("bob", "dba"), "approve", None, now_ns=t0 + 61 * S)
    assert e.value.status == 409 and "expired" in e.value.message
    fresh, created = book.open(hold(), now_ns=t0 + 62 * S)
    assert created and fresh["id"] != req["id"]

    book.vote(fresh["id"], voter("bob", "dba"), "approve", None, now_ns=t0 + 63 * S)
    assert book.release(hold(), now_ns=t0 + 63 * S + 31 * S) is None  # approved, but not used in time
    assert book.get(fresh["id"])["state"] == "expired"  # type: ignore[index]


def test_grant_patterns() -> None:
    assert covers(None, {"anything": 1})
    assert covers({"table": "audit_*"}, {"table": "audit_2026", "rows": 5})
    assert not covers({"table": "audit_*"}, {"table": "users"})
    assert not covers({"table": "audit_*"}, {"rows": 5})  # a listed argument must be present
    assert covers({"limit": "1?"}, {"limit": 10}) and not covers({"limit": "1?"}, {"limit": 100})


def test_grants_cover_later_calls_until_they_lapse(engine: Engine) -> None:
    book = ApprovalBook(engine)
    t0 = 1_000 * S
    req, _ = book.open(hold({"table": "audit_1"}), now_ns=t0)
    book.vote(req["id"], voter("bob", "dba"), "approve", None, now_ns=t0, grant={"minutes": 10, "arguments": None})
    later = hold({"table": "anything"})
    assert book.grant_for(later, now_ns=t0 + 9 * 60 * S) is not None
    assert book.grant_for(later, now_ns=t0 + 11 * 60 * S) is None
    assert book.grant_for(hold({"table": "x"}, who="mallory"), now_ns=t0 + S) is None
    with pytest.raises(ApprovalError) as e:
        book.vote(req["id"], voter("bob", "dba"), "approve", None, grant={"minutes": 0})
    assert e.value.status == 400


def test_break_glass_then_review(engine: Engine) -> None:
    book = ApprovalBook(engine)
    row = book.break_glass(hold(), "prod down")
    assert row["state"] == "break_glass" and row["reason"] == "prod down"
    with pytest.raises(ApprovalError):
        book.vote(row["id"], voter("bob", "dba"), "approve", None)  # not pending: nothing to approve
    assert book.vote(row["id"], voter("bob", "dba"), "review", "fine")["state"] == "reviewed"


def test_a_rule_can_want_one_approval_from_each_group(engine: Engine) -> None:
    book = ApprovalBook(engine)
    h = hold()
    strict = Hold(**{**{f: getattr(h, f) for f in h.__dataclass_fields__}, "all_groups": True})
    req, _ = book.open(strict)
    assert book.vote(req["id"], voter("bob", "dba"), "approve", None)["state"] == "pending"  # sre has not agreed
    assert book.vote(req["id"], voter("erin", "sre"), "approve", None)["state"] == "approved"
    counted = Hold(**{**{f: getattr(h, f) for f in h.__dataclass_fields__}, "required": 2, "digest": "sha256:2"})
    req2, _ = book.open(counted)
    assert book.get(req2["id"])["required"] == 2  # type: ignore[index]


def test_hold_rules_carry_their_approval_counts() -> None:
    from portcullis.policy import PolicyError
    from portcullis.policy.load import load_policy_text

    policy = load_policy_text(
        "version: 1\nrules:\n  - id: h\n"
        "    hold: {tools: [drop], approvers: [dba, sre], approvals: 2, all_groups: true}\n",
        "p.yaml",
    )
    (rule,) = list(policy.all_rules())
    assert (rule.approvals, rule.all_groups, rule.approvers) == (2, True, ("dba", "sre"))
    with pytest.raises(PolicyError) as e:
        load_policy_text("version: 1\nrules:\n  - id: a\n    allow: {tools: [x], approvals: 2}\n", "p.yaml")
    assert "only for hold rules" in str(e.value.problems)
    with pytest.raises(PolicyError) as e:
        load_policy_text("version: 1\nrules:\n  - id: h\n    hold: {tools: [x], approvals: 0}\n", "p.yaml")
    assert "1 to 10" in str(e.value.problems)


def _with(h: Hold, **changes: object) -> Hold:
    return Hold(**{**{f: getattr(h, f) for f in h.__dataclass_fields__}, **changes})


def test_review_findings_stay_fixed(engine: Engine) -> None:
    """Each case a review found: concurrent two-of-two votes, grants on multi-approval rules, an approval outliving
    a stricter rule, one person covering two groups, and authorisation checked before the state is told."""
    book = ApprovalBook(engine, required=2)
    req, _ = book.open(hold())
    results: list[object] = []
    voters = [voter("bob", "dba"), voter("erin", "sre")]
    threads = [
        threading.Thread(target=lambda v=v: results.append(book.vote(req["id"], v, "approve", None))) for v in voters
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert book.get(req["id"])["state"] == "approved"  # type: ignore[index]  # neither vote was decided on a stale read

    two, _ = book.open(hold({"t": 2}))
    with pytest.raises(ApprovalError) as e:
        book.vote(two["id"], voter("bob", "dba"), "approve", None, grant={"minutes": 5, "arguments": None})
    assert e.value.status == 400 and "one approval" in e.value.message

    single = ApprovalBook(engine)
    one, _ = single.open(hold({"t": 3}))
    single.vote(one["id"], voter("bob", "dba"), "approve", None)
    stricter = _with(hold({"t": 3}), required=2)
    assert single.release(stricter) is None  # the rule now wants two approvals: one no longer releases it
    assert single.release(_with(hold({"t": 3}), rule="another-rule")) is None
    assert single.release(hold({"t": 3})) is not None

    both, _ = single.open(_with(hold({"t": 4}), all_groups=True))
    assert single.vote(both["id"], voter("dave", "dba", "sre"), "approve", None)["state"] == "pending"
    assert single.vote(both["id"], voter("erin", "sre"), "approve", None)["state"] == "approved"

    with pytest.raises(ApprovalError) as e:
        single.vote(both["id"], voter("carol", "auditors"), "approve", None)
    assert e.value.status == 403  # not "409 already approved": a stranger learns nothing about the request


def test_the_hold_binds_the_whole_call_and_refuses_odd_shapes() -> None:
    from portcullis.flow import Direction, Flow
    from portcullis.pipeline.authz import AuthzStage
    from portcullis.policy import PolicyEngine
    from portcullis.policy.load import load_policy_text
    from portcullis.wire.jsonrpc import Kind, Message
    from portcullis.wire.mcp import Era

    engine = PolicyEngine(load_policy_text("version: 1\ndefault: hold\nrules: []\n", "p.yaml"))
    stage = AuthzStage(lambda: engine)

    def run(body: dict[str, object], kind: Kind = Kind.REQUEST) -> Flow:
        flow = Flow("srv", Era.SESSION, Direction.C2S, Message(b"{}", {"jsonrpc": "2.0", **body}, kind))
        stage.on_request(flow)
        return flow

    a = run({"id": 1, "method": "completion/complete", "params": {"ref": {"type": "ref/prompt", "name": "p"}}})
    b = run({"id": 2, "method": "completion/complete", "params": {"ref": {"type": "ref/prompt", "name": "other"}}})
    assert a.hold is not None and b.hold is not None and a.hold.digest != b.hold.digest
    odd = run({"id": 3, "method": "tools/call", "params": {"name": "t", "arguments": "DROP EVERYTHING"}})
    assert odd.response is not None and odd.response.body["error"]["code"] == -32602 and odd.hold is None
    sneaky = run({"method": "tools/call", "params": {"name": "drop"}}, Kind.NOTIFICATION)
    assert sneaky.response is not None and sneaky.response.body["error"]["code"] == -32010


def test_one_caller_cannot_flood_the_approvers(engine: Engine) -> None:
    book = ApprovalBook(engine, ttl=60)
    first, _ = book.open(hold({"n": 1}), max_pending=2)
    book.open(hold({"n": 2}), max_pending=2)
    assert book.open(hold({"n": 1}), max_pending=2) == (first, False)  # a retry finds its own request: no new one
    with pytest.raises(TooManyPending) as too_many:
        book.open(hold({"n": 3}), max_pending=2)
    assert too_many.value.pending == 2
    assert book.open(hold({"n": 3}, who="bob"), max_pending=2)[1]  # the cap is per caller
    book.vote(first["id"], voter("carol", "dba"), "deny", "no")  # a decided request frees a place
    assert book.open(hold({"n": 3}), max_pending=2)[1]
    later = first["created_ns"] + 61 * S  # and so do expired ones
    assert book.open(hold({"n": 4}), now_ns=later, max_pending=2)[1]


def test_expiry_is_swept_once(engine: Engine) -> None:
    book = ApprovalBook(engine, ttl=60)
    old, _ = book.open(hold({"n": 1}))
    fresh, _ = book.open(hold({"n": 2}), now_ns=old["created_ns"] + 30 * S)
    later = old["created_ns"] + 61 * S
    (expired,) = book.expire_due(now_ns=later)
    assert expired["id"] == old["id"] and expired["state"] == "expired"
    assert book.expire_due(now_ns=later) == []  # told once, whoever sweeps next (another replica too)
    assert book.get(fresh["id"])["state"] == "pending"  # type: ignore[index]
    with pytest.raises(ApprovalError) as e:
        book.vote(old["id"], voter("bob", "dba"), "approve", None)
    assert e.value.status == 409
