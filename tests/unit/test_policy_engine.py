"""Policy decisions: the matrix, precedence, tiers and annotations, list filtering, fail-closed evaluation."""

from __future__ import annotations

import time
from typing import Any

import pytest

from portcullis.policy import (
    MAX_DEPTH,
    MAX_NODES,
    MAX_STRING_CHARS,
    PolicyEngine,
    PolicyRequest,
    Principal,
    load_policy_text,
)

MATRIX_POLICY = r"""
version: 1
default: deny
rules:
  - id: eng-read
    allow: {groups: [eng], servers: [github, docs], tools: ["get_*", "list_*", "search_*"]}
  - id: eng-write
    allow: {groups: [eng], servers: [github], tools: [create_issue]}
  - id: no-force-push
    deny: {servers: [github], tools: [force_push, delete_repo]}
  - id: admins
    allow: {groups: [admin]}
  - id: dba-db
    allow: {groups: [dba], servers: [prod-db]}
  - id: data-tmp-delete
    allow: {groups: [data], servers: [prod-db], tools: [delete_rows], when: 'arguments.table.startsWith("tmp_")'}
  - id: no-prod-drops
    hold: {servers: [prod-db], tools: ["drop_*"], approvers: [dba]}
  - id: tmp-tables-only
    deny: {servers: [prod-db], tools: [delete_rows], when: '!(arguments.table.startsWith("tmp_"))'}
  - id: fs-read
    allow: {groups: [eng, ops], servers: [fs], tools: [read_file]}
  - id: fs-no-etc
    deny: {servers: [fs], when: 'has(arguments.path) && pathWithin(arguments.path, "/etc")'}
  - id: contractors-fenced
    deny: {groups: [contractors], servers: [prod-db]}
  - id: docs-resources
    allow: {servers: [docs], resources: ["docs://*"], prompts: [summarize, "explain_*"]}
  - id: big-refunds
    hold: {users: [Frank@Example.com], servers: [billing], tools: [refund], when: 'double(arguments.amount) > 500.0'}
  - id: refunds
    allow: {users: [frank@example.com], servers: [billing], tools: [refund]}
defaults:
  - id: staff-read-only
    allow: {groups: [eng, ops], when: annotations.readOnlyHint}
  - id: staff-destructive-hold
    hold: {groups: [eng, ops], when: 'annotations.destructiveHint && !annotations.readOnlyHint', approvers: [sec]}
"""

ENG = Principal("alice", "alice@example.com", frozenset({"eng"}))
ADMIN = Principal("root", None, frozenset({"admin"}))
DATA = Principal("bob", None, frozenset({"data"}))
DBA = Principal("dora", None, frozenset({"dba"}))
CONTRACTOR_DBA = Principal("carl", None, frozenset({"dba", "contractors"}))
OPS = Principal("olga", None, frozenset({"ops"}))
NOBODY = Principal("nobody")
FRANK = Principal("f-123", "FRANK@example.com", frozenset({"finance"}))

RO = {"readOnlyHint": True}

MATRIX: list[tuple[Principal, str, str, str | None, dict[str, Any], dict[str, Any] | None, str, str | None]] = [
    # principal, server, method, target, arguments, annotations, effect, deciding rule
    (ENG, "github", "tools/call", "get_issue", {}, None, "allow", "eng-read"),
    (ENG, "github", "tools/call", "create_issue", {"title": "x"}, None, "allow", "eng-write"),
    (ENG, "github", "tools/call", "force_push", {}, None, "deny", "no-force-push"),
    (ADMIN, "github", "tools/call", "force_push", {}, None, "deny", "no-force-push"),
    (ADMIN, "github", "tools/call", "anything", {}, None, "allow", "admins"),
    (ENG, "gitlab", "tools/call", "get_issue", {}, RO, "allow", "staff-read-only"),
    # annotations: defaults for what no rule covers, never over an explicit rule
    (ENG, "github", "tools/call", "delete_branch", {}, None, "hold", "staff-destructive-hold"),
    (ENG, "github", "tools/call", "delete_branch", {}, RO, "allow", "staff-read-only"),
    (ENG, "github", "tools/call", "delete_branch", {}, {"destructiveHint": False}, "deny", None),
    (ENG, "github", "tools/call", "force_push", {}, RO, "deny", "no-force-push"),
    (ENG, "github", "tools/call", "create_issue", {}, {"destructiveHint": True}, "allow", "eng-write"),
    (ENG, "github", "tools/call", "delete_branch", {}, {"readOnlyHint": "yes"}, "hold", "staff-destructive-hold"),
    (NOBODY, "github", "tools/call", "delete_branch", {}, RO, "deny", None),
    # arguments
    (DATA, "prod-db", "tools/call", "delete_rows", {"table": "tmp_a"}, None, "allow", "data-tmp-delete"),
    (DATA, "prod-db", "tools/call", "delete_rows", {"table": "users"}, None, "deny", "tmp-tables-only"),
    (DATA, "prod-db", "tools/call", "delete_rows", {}, None, "deny", "tmp-tables-only"),
    (DATA, "prod-db", "tools/call", "delete_rows", {"table": 5}, None, "deny", "tmp-tables-only"),
    (DATA, "prod-db", "tools/call", "drop_table", {}, None, "hold", "no-prod-drops"),
    (DBA, "prod-db", "tools/call", "drop_table", {"table": "users"}, None, "hold", "no-prod-drops"),
    (DBA, "prod-db", "tools/call", "query", {"sql": "select 1"}, None, "allow", "dba-db"),
    (DBA, "prod-db", "tools/call", "delete_rows", {"table": "tmp_x"}, None, "allow", "dba-db"),
    (CONTRACTOR_DBA, "prod-db", "tools/call", "query", {}, None, "deny", "contractors-fenced"),
    (NOBODY, "prod-db", "tools/call", "drop_table", {}, None, "hold", "no-prod-drops"),
    (NOBODY, "prod-db", "tools/call", "query", {}, None, "deny", None),
    (OPS, "fs", "tools/call", "read_file", {"path": "/etc/passwd"}, None, "deny", "fs-no-etc"),
    (OPS, "fs", "tools/call", "read_file", {"path": "/srv/../etc/shadow"}, None, "deny", "fs-no-etc"),
    (OPS, "fs", "tools/call", "read_file", {"path": "//etc//hosts"}, None, "deny", "fs-no-etc"),
    (OPS, "fs", "tools/call", "read_file", {"path": "/etcetera/x"}, None, "allow", "fs-read"),
    (OPS, "fs", "tools/call", "read_file", {"path": "/srv/app.txt"}, None, "allow", "fs-read"),
    (OPS, "fs", "tools/call", "read_file", {}, None, "allow", "fs-read"),
    (OPS, "fs", "tools/call", "write_file", {"path": "/srv/x"}, None, "hold", "staff-destructive-hold"),
    (FRANK, "billing", "tools/call", "refund", {"amount": 20}, None, "allow", "refunds"),
    (FRANK, "billing", "tools/call", "refund", {"amount": 900.5}, None, "hold", "big-refunds"),
    (FRANK, "billing", "tools/call", "refund", {"amount": "lots"}, None, "deny", "big-refunds"),
    # resources and prompts
    (NOBODY, "docs", "resources/read", "docs://guide/intro", {}, None, "allow", "docs-resources"),
    (NOBODY, "docs", "resources/read", "file:///etc/passwd", {}, None, "deny", None),
    (NOBODY, "docs", "prompts/get", "summarize", {}, None, "allow", "docs-resources"),
    (NOBODY, "docs", "prompts/get", "explain_code", {"lang": "py"}, None, "allow", "docs-resources"),
    (NOBODY, "docs", "prompts/get", "other", {}, None, "deny", None),
    (NOBODY, "docs", "tools/call", "get_page", {}, None, "deny", None),
    (ENG, "docs", "tools/call", "get_page", {}, None, "allow", "eng-read"),
    (ENG, "docs", "resources/read", "docs://x", {}, None, "allow", "docs-resources"),
    # a method that names no target; annotations do not exist for it
    (ENG, "github", "ping", None, {}, None, "deny", None),
    (ADMIN, "github", "ping", None, {}, None, "allow", "admins"),
    # list methods: could the caller use anything of that kind here?
    (DATA, "prod-db", "tools/list", None, {}, None, "allow", "no-prod-drops"),  # hold > allow, both "could"
    (CONTRACTOR_DBA, "prod-db", "tools/list", None, {}, None, "deny", "contractors-fenced"),
    (NOBODY, "github", "tools/list", None, {}, None, "deny", None),
    (NOBODY, "docs", "resources/list", None, {}, None, "allow", "docs-resources"),
    (NOBODY, "docs", "resources/templates/list", None, {}, None, "allow", "docs-resources"),
    (NOBODY, "docs", "prompts/list", None, {}, None, "allow", "docs-resources"),
    (ENG, "gitlab", "tools/list", None, {}, None, "allow", "staff-destructive-hold"),
    (ENG, "github", "tools/list", None, {}, None, "allow", "eng-read"),
]


@pytest.fixture(scope="module")
def engine() -> PolicyEngine:
    return PolicyEngine(load_policy_text(MATRIX_POLICY, "matrix.yaml"))


def ids(row: tuple[Any, ...]) -> str:
    p, server, method, target, args, ann, effect, _ = row
    return f"{p.subject}-{server}-{method}-{target}-{args}-{ann}->{effect}"


@pytest.mark.parametrize("row", MATRIX, ids=[ids(r) for r in MATRIX])
def test_matrix(engine: PolicyEngine, row: tuple[Any, ...]) -> None:
    p, server, method, target, args, ann, effect, rule = row
    req = PolicyRequest(p, server, method, target, args, ann)
    d = engine.decide(req)
    assert (d.effect, d.rule) == (effect, rule), d.reason
    assert d.policy_version == engine.version
    ex = engine.explain(req)
    assert ex.decision == d
    if rule is not None:
        assert any(t.rule == rule and t.status in ("match", "maybe", "error") for t in ex.trace)


def test_hold_carries_approvers(engine: PolicyEngine) -> None:
    d = engine.decide(PolicyRequest(DBA, "prod-db", "tools/call", "drop_table"))
    assert d.effect == "hold" and d.approvers == ("dba",)
    assert "holds for approval" in d.reason
    d = engine.decide(PolicyRequest(DBA, "prod-db", "tools/call", "query"))
    assert d.approvers == ()


def test_error_reason_names_the_missing_argument(engine: PolicyEngine) -> None:
    d = engine.decide(PolicyRequest(DATA, "prod-db", "tools/call", "delete_rows", {"tabel": "tmp_x"}))
    assert d.effect == "deny" and d.rule == "tmp-tables-only"
    assert 'no argument "table"' in d.reason and "fail closed" in d.reason


def test_explain_lists_every_rule_in_file_order(engine: PolicyEngine) -> None:
    ex = engine.explain(PolicyRequest(ENG, "github", "tools/call", "create_issue"))
    assert [t.rule for t in ex.trace] == [r.id for r in engine.policy.rules] + [r.id for r in engine.policy.defaults]
    assert [t.line for t in ex.trace if t.tier == "rules"] == sorted(t.line for t in ex.trace if t.tier == "rules")
    by = {t.rule: t for t in ex.trace}
    assert by["eng-write"].status == "match"
    assert by["eng-read"].status == "no-match" and "create_issue" in by["eng-read"].detail
    assert by["dba-db"].status == "no-match" and "prod-db" in by["dba-db"].detail
    assert by["admins"].status == "no-match" and "groups" in by["admins"].detail
    assert not by["staff-read-only"].consulted and by["eng-write"].consulted


# --- precedence ---------------------------------------------------------------------------------------------


def policy(rules: str, default: str = "deny", defaults: str = "") -> PolicyEngine:
    text = f"version: 1\ndefault: {default}\nrules:\n{rules}"
    if defaults:
        text += f"\ndefaults:\n{defaults}"
    return PolicyEngine(load_policy_text(text))


ALL_THREE = [
    "  - {id: a, allow: {tools: [t]}}",
    "  - {id: h, hold: {tools: [t]}}",
    "  - {id: d, deny: {tools: [t]}}",
]


@pytest.mark.parametrize(
    "order", [(0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)], ids=lambda o: "".join(map(str, o))
)
def test_deny_beats_hold_beats_allow_in_any_order(order: tuple[int, int, int]) -> None:
    lines = [ALL_THREE[i] for i in order]
    req = PolicyRequest(NOBODY, "s", "tools/call", "t")
    assert policy("\n".join(lines)).decide(req).rule == "d"
    without_deny = [line for line in lines if "id: d" not in line]
    assert policy("\n".join(without_deny)).decide(req).rule == "h"
    only_allow = [line for line in lines if "id: a" in line]
    assert policy("\n".join(only_allow)).decide(req).rule == "a"


def test_first_rule_in_file_order_decides_among_equals() -> None:
    e = policy("  - {id: one, allow: {tools: ['*']}}\n  - {id: two, allow: {tools: [t]}}")
    assert e.decide(PolicyRequest(NOBODY, "s", "tools/call", "t")).rule == "one"


@pytest.mark.parametrize("default", ["allow", "deny", "hold"])
def test_policy_default(default: str) -> None:
    e = policy("  - {id: x, deny: {tools: [bad]}}", default=default)
    d = e.decide(PolicyRequest(NOBODY, "s", "tools/call", "fine"))
    assert (d.effect, d.rule) == (default, None)
    assert f"default is {default}" in d.reason
    assert e.decide(PolicyRequest(NOBODY, "s", "tools/call", "bad")).effect == "deny"


def test_defaults_tier_only_when_no_rule_applies() -> None:
    e = policy(
        "  - {id: explicit-allow, allow: {tools: [t]}}\n  - {id: explicit-deny, deny: {tools: [u]}}",
        defaults="  - {id: ann-deny, deny: {when: annotations.destructiveHint}}\n"
        "  - {id: ann-allow, allow: {when: annotations.readOnlyHint}}",
    )
    destructive = {"destructiveHint": True}
    assert e.decide(PolicyRequest(NOBODY, "s", "tools/call", "t", {}, destructive)).rule == "explicit-allow"
    assert e.decide(PolicyRequest(NOBODY, "s", "tools/call", "u", {}, RO)).rule == "explicit-deny"
    assert e.decide(PolicyRequest(NOBODY, "s", "tools/call", "v", {}, destructive)).rule == "ann-deny"
    # readOnlyHint does not switch destructiveHint off: both defaults hold, and deny wins
    assert e.decide(PolicyRequest(NOBODY, "s", "tools/call", "v", {}, RO)).rule == "ann-deny"
    ro_safe = {"readOnlyHint": True, "destructiveHint": False}
    assert e.decide(PolicyRequest(NOBODY, "s", "tools/call", "v", {}, ro_safe)).rule == "ann-allow"


def test_annotation_defaults_follow_the_spec() -> None:
    e = policy(
        "  - {id: never, deny: {tools: [nothing]}}",
        defaults="  - {id: ro, allow: {when: annotations.readOnlyHint}}\n"
        "  - {id: d, deny: {when: annotations.destructiveHint}}\n"
        "  - {id: ow, hold: {when: annotations.openWorldHint}}\n"
        "  - {id: idem, allow: {when: annotations.idempotentHint}}",
    )
    unknown = e.explain(PolicyRequest(NOBODY, "s", "tools/call", "x", {}, None))
    status = {t.rule: t.status for t in unknown.trace}
    assert status == {"never": "no-match", "ro": "no-match", "d": "match", "ow": "match", "idem": "no-match"}
    explicit = {"readOnlyHint": True, "destructiveHint": False, "openWorldHint": False, "idempotentHint": True}
    known = e.explain(PolicyRequest(NOBODY, "s", "tools/call", "x", {}, explicit))
    status = {t.rule: t.status for t in known.trace}
    assert status == {"never": "no-match", "ro": "match", "d": "no-match", "ow": "no-match", "idem": "match"}


def test_matchers_users_clients_except_groups_methods() -> None:
    e = policy(
        "  - {id: by-sub, allow: {users: [u-1], tools: [a]}}\n"
        "  - {id: by-mail, allow: {users: [Ann@X.org], tools: [b]}}\n"
        "  - {id: by-client, allow: {clients: [cli], tools: [c]}}\n"
        "  - {id: except, deny: {except_groups: [admin], tools: ['*']}}\n"
        "  - {id: admin, allow: {groups: [admin], methods: [tools/call, completion/complete]}}"
    )
    ann = Principal("u-2", "ann@x.ORG", frozenset({"admin"}), "cli")
    assert e.decide(PolicyRequest(Principal("u-1", groups=frozenset({"admin"})), "s", "tools/call", "a")).allowed
    assert e.decide(PolicyRequest(ann, "s", "tools/call", "b")).rule == "by-mail"
    assert e.decide(PolicyRequest(ann, "s", "tools/call", "c")).rule == "by-client"
    assert e.decide(PolicyRequest(ann, "s", "completion/complete")).rule == "admin"
    assert e.decide(PolicyRequest(ann, "s", "logging/setLevel")).effect == "deny"
    not_admin = Principal("u-1", client_id="cli")
    assert e.decide(PolicyRequest(not_admin, "s", "tools/call", "a")).rule == "except"


def test_globs() -> None:
    e = policy(
        "  - {id: g, allow: {servers: ['prod-*', 'db?'], tools: ['get_*_v?', 'x*y', exact], resources: ['s3://b/*']}}"
    )

    def ok(server: str, tool: str) -> bool:
        return e.decide(PolicyRequest(NOBODY, server, "tools/call", tool)).allowed

    assert ok("prod-eu", "get_user_v2") and ok("db1", "exact") and ok("prod-", "x/y")
    assert not ok("db12", "exact") and not ok("staging", "exact") and not ok("prod-eu", "get_user_v22")
    assert not ok("prod-eu", "Exact") and not ok("prod-eu", "exact ")
    assert e.decide(PolicyRequest(NOBODY, "db2", "resources/read", "s3://b/deep/key")).allowed
    assert not e.decide(PolicyRequest(NOBODY, "db2", "resources/read", "s3://bb/key")).allowed


# --- list filtering ---------------------------------------------------------------------------------------


def names(items: list[dict[str, Any]], key: str = "name") -> list[Any]:
    return [i[key] for i in items]


def test_visible_tools(engine: PolicyEngine) -> None:
    tools: list[Any] = [
        {"name": "get_issue"},
        {"name": "create_issue"},
        {"name": "force_push"},
        {"name": "delete_branch", "annotations": {"readOnlyHint": True}},
        {"name": "close_issue", "annotations": {"destructiveHint": False}},
        {"name": 42},
        "not-a-dict",
        {"title": "no name"},
    ]
    assert names(engine.visible(ENG, "github", "tool", tools)) == ["get_issue", "create_issue", "delete_branch"]
    assert names(engine.visible(NOBODY, "github", "tool", tools)) == []
    assert names(engine.visible(ADMIN, "github", "tool", tools)) == [
        "get_issue",
        "create_issue",
        "delete_branch",
        "close_issue",
    ]


def test_visible_treats_argument_conditions_as_could(engine: PolicyEngine) -> None:
    tools = [{"name": n} for n in ("delete_rows", "drop_table", "query", "insert_rows")]
    # data may delete tmp_ rows: the allow could apply, the deny on other tables might not -> visible;
    # drop_* is held for approval -> visible; query / insert_rows: nothing allows them -> hidden
    assert names(engine.visible(DATA, "prod-db", "tool", tools)) == ["delete_rows", "drop_table"]
    assert names(engine.visible(DBA, "prod-db", "tool", tools)) == ["delete_rows", "drop_table", "query", "insert_rows"]
    assert names(engine.visible(CONTRACTOR_DBA, "prod-db", "tool", tools)) == []
    # fs-no-etc reads arguments: not certain at list time, so it hides nothing
    assert names(engine.visible(OPS, "fs", "tool", [{"name": "read_file"}])) == ["read_file"]


def test_visible_resources_templates_prompts(engine: PolicyEngine) -> None:
    resources: list[Any] = [{"uri": "docs://a"}, {"uri": "file:///etc/passwd"}, {"uri": None}]
    assert names(engine.visible(NOBODY, "docs", "resource", resources), "uri") == ["docs://a"]
    templates = [{"uriTemplate": "docs://{path}"}, {"uriTemplate": "file:///{path}"}]
    assert names(engine.visible(NOBODY, "docs", "resource_template", templates), "uriTemplate") == ["docs://{path}"]
    prompts = [{"name": "summarize"}, {"name": "explain_sql"}, {"name": "jailbreak"}]
    assert names(engine.visible(NOBODY, "docs", "prompt", prompts)) == ["summarize", "explain_sql"]


def test_filter_list_result_is_private_and_new(engine: PolicyEngine) -> None:
    result = {"tools": [{"name": "get_issue"}, {"name": "force_push"}], "nextCursor": "c2", "ttlMs": 60000}
    out = engine.filter_list_result(ENG, "github", "tools/list", result)
    assert out.result == {"tools": [{"name": "get_issue"}], "nextCursor": "c2", "ttlMs": 60000, "cacheScope": "private"}
    assert (out.shown, out.hidden) == (1, 1)
    assert result["tools"] == [{"name": "get_issue"}, {"name": "force_push"}] and "cacheScope" not in result
    templates = {"resourceTemplates": [{"uriTemplate": "docs://{x}"}], "cacheScope": "public"}
    out = engine.filter_list_result(NOBODY, "docs", "resources/templates/list", templates)
    assert out.result["cacheScope"] == "private" and out.shown == 1
    broken = engine.filter_list_result(ENG, "github", "tools/list", {"tools": "nope"})
    assert broken.result["tools"] == [] and broken.result["cacheScope"] == "private"
    with pytest.raises(ValueError, match="not a list method"):
        engine.filter_list_result(ENG, "github", "tools/call", result)


def test_visible_agrees_with_decide_for_the_listed_arguments(engine: PolicyEngine) -> None:
    """Anything decide() allows or holds is listed (the 'could' is an over-approximation)."""
    for p in (ENG, ADMIN, DATA, DBA, CONTRACTOR_DBA, OPS, NOBODY, FRANK):
        for server in ("github", "prod-db", "fs", "billing", "docs"):
            for tool in ("get_x", "create_issue", "force_push", "delete_rows", "drop_t", "read_file", "refund"):
                for args in ({}, {"table": "tmp_1"}, {"table": "x"}, {"path": "/etc/x"}, {"amount": 1000}):
                    d = engine.decide(PolicyRequest(p, server, "tools/call", tool, args))
                    shown = engine.visible(p, server, "tool", [{"name": tool}])
                    if d.effect != "deny":
                        assert shown, (p, server, tool, args, d)


# --- fail closed, hostile input -----------------------------------------------------------------------------

GUARDED = """
  - id: allow-if-small
    allow: {tools: [t], when: 'arguments.n < 10'}
  - id: allow-if-tagged
    allow: {tools: [tags], when: 'arguments.tags.exists(x, x == "ok")'}
  - id: allow-any-size
    allow: {tools: [whole], when: 'size(arguments) < 5'}
  - id: deny-if-secret
    deny: {tools: [deny], when: 'has(arguments.secret)'}
  - id: allow-deny-tool
    allow: {tools: [deny]}
"""


def nested(depth: int) -> dict[str, Any]:
    v: dict[str, Any] = {"leaf": 1}
    for _ in range(depth):
        v = {"a": v}
    return v


@pytest.mark.parametrize(
    ("tool", "arguments", "why"),
    [
        ("t", {}, 'no argument "n"'),
        ("t", {"n": "5"}, "No matching overloads found : _<_(string, int64)"),
        ("t", {"n": None}, "No matching overloads found : _<_(null_type, int64)"),
        ("t", {"n": 10**30}, "out of range"),
        ("t", {"n": nested(MAX_DEPTH + 5)}, f"nested deeper than {MAX_DEPTH}"),
        ("t", {"n": nested(50_000)}, f"nested deeper than {MAX_DEPTH}"),
        ("t", {"n": list(range(MAX_NODES + 1))}, f"more than {MAX_NODES} values"),
        ("t", {"n": "x" * (MAX_STRING_CHARS + 1)}, "characters"),
        ("t", {"n": object()}, "not JSON data"),
        ("t", {"n": {1: 2}}, "map key is not a string"),
        ("tags", {"tags": ["a"] * (MAX_NODES + 10)}, f"more than {MAX_NODES} values"),
        ("tags", {"tags": "ok"}, "No matching overloads"),
        ("whole", {f"k{i}": i for i in range(MAX_NODES + 1)}, f"more than {MAX_NODES} values"),
        ("whole", {"x": nested(100)}, "nested deeper"),
    ],
    ids=lambda v: v[:30] if isinstance(v, str) else type(v).__name__,
)
def test_condition_errors_deny(tool: str, arguments: dict[str, Any], why: str) -> None:
    e = policy(GUARDED)
    d = e.decide(PolicyRequest(NOBODY, "s", "tools/call", tool, arguments))
    assert d.effect == "deny" and d.rule is not None, d
    assert why in d.reason and "fail closed" in d.reason


def test_hostile_arguments_not_read_by_any_condition_do_not_matter() -> None:
    e = policy(GUARDED)
    huge = {"n": 1, "blob": "x" * (MAX_STRING_CHARS * 2), "deep": nested(10_000)}
    assert e.decide(PolicyRequest(NOBODY, "s", "tools/call", "t", huge)).effect == "allow"
    assert e.decide(PolicyRequest(NOBODY, "s", "tools/call", "deny", {"secret": 1, "deep": nested(10_000)})).effect == (
        "deny"
    )
    assert e.decide(PolicyRequest(NOBODY, "s", "tools/call", "deny", {"deep": nested(10_000)})).effect == "allow"


def test_arguments_that_are_not_a_map_deny() -> None:
    e = policy(GUARDED)
    bad: Any = ["n", 1]
    d = e.decide(PolicyRequest(NOBODY, "s", "tools/call", "t", bad))
    assert d.effect == "deny" and "not a map" in d.reason


def test_non_dict_mappings_and_tuples_are_accepted() -> None:
    from types import MappingProxyType

    e = policy(GUARDED)
    args = MappingProxyType({"n": 3, "tags": ("no", "ok")})
    assert e.decide(PolicyRequest(NOBODY, "s", "tools/call", "t", args)).effect == "allow"
    assert e.decide(PolicyRequest(NOBODY, "s", "tools/call", "tags", args)).effect == "allow"
    assert e.decide(PolicyRequest(NOBODY, "s", "tools/call", "whole", args)).effect == "allow"


def test_an_error_in_any_consulted_rule_denies_even_when_another_allows() -> None:
    e = policy("  - {id: open, allow: {tools: [t]}}\n  - {id: picky, hold: {tools: [t], when: 'arguments.x == 1'}}")
    d = e.decide(PolicyRequest(NOBODY, "s", "tools/call", "t", {}))
    assert (d.effect, d.rule) == ("deny", "picky")
    assert e.decide(PolicyRequest(NOBODY, "s", "tools/call", "t", {"x": 2})).rule == "open"
    assert e.decide(PolicyRequest(NOBODY, "s", "tools/call", "t", {"x": 1})).rule == "picky"
    # a rule whose principal matchers do not match is not consulted: its condition is never evaluated
    e = policy("  - {id: open, allow: {tools: [t]}}\n  - {id: picky, hold: {groups: [g], when: 'arguments.x == 1'}}")
    assert e.decide(PolicyRequest(NOBODY, "s", "tools/call", "t", {})).rule == "open"


def test_regex_conditions() -> None:
    e = policy(
        "  - id: sql\n    deny: {tools: [query], when: '!arguments.sql.matches(\"(?i)^\\\\s*select\\\\b\")'}\n"
        "  - {id: q, allow: {tools: [query]}}\n"
        "  - id: dyn\n    allow: {tools: [dyn], when: 'arguments.s.matches(arguments.p)'}"
    )

    def eff(tool: str, args: dict[str, Any]) -> str:
        return e.decide(PolicyRequest(NOBODY, "s", "tools/call", tool, args)).effect

    assert eff("query", {"sql": "  SELECT * FROM t"}) == "allow"
    assert eff("query", {"sql": "selectivity"}) == "deny"
    assert eff("query", {"sql": "DROP TABLE t; select 1"}) == "deny"
    assert eff("dyn", {"s": "abc", "p": "^a.c$"}) == "allow"
    assert eff("dyn", {"s": "abc", "p": "("}) == "deny"  # a bad pattern from the caller fails closed
    # RE2 runs in linear time: a pattern that backtracks exponentially elsewhere is harmless
    t0 = time.perf_counter()
    assert eff("dyn", {"s": "a" * 5000 + "!", "p": "(a+)+$"}) == "deny"
    assert eff("dyn", {"s": "a" * 5000, "p": "(a+)+$"}) == "allow"
    assert time.perf_counter() - t0 < 1.0


def test_candidate_cache_is_bounded(engine: PolicyEngine) -> None:
    for i in range(6000):
        engine.decide(PolicyRequest(ENG, "github", "tools/call", f"tool-{i}"))
    assert len(engine._cands) <= 4096
