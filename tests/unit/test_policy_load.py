"""Loading policies: precise errors (file:line:col, rule id, what was expected), compile-time checks, versions."""

from __future__ import annotations

from pathlib import Path

import pytest

from portcullis.policy import PolicyError, load_policy, load_policy_text


def problems(text: str) -> list[str]:
    with pytest.raises(PolicyError) as info:
        load_policy_text(text, "p.yaml")
    return info.value.problems


def one(text: str) -> str:
    found = problems(text)
    assert len(found) == 1, found
    return found[0]


HEAD = "version: 1\nrules:\n"


def test_minimal_and_example_policies_load() -> None:
    ps = load_policy_text("version: 1\n", "p.yaml")
    assert ps.default == "deny" and ps.rules == () and ps.defaults == ()
    ps = load_policy_text(
        """version: 1
default: deny
rules:
  - id: eng-read
    allow: {groups: [eng], servers: [github, docs], tools: ["get_*", "list_*", "search_*"]}
  - id: no-prod-drops
    hold: {servers: [prod-db], tools: ["drop_*"], approvers: [dba]}   # approvers stored for later
  - id: tmp-tables-only
    deny: {servers: [prod-db], tools: [delete_rows], when: '!(arguments.table.startsWith("tmp_"))'}
  - id: everything
    allow: {}
  - id: single-strings
    deny: {groups: eng, tools: force_push}
""",
        "p.yaml",
    )
    assert [r.id for r in ps.rules] == ["eng-read", "no-prod-drops", "tmp-tables-only", "everything", "single-strings"]
    assert [r.line for r in ps.rules] == [4, 6, 8, 10, 12]
    assert ps.rules[1].approvers == ("dba",)
    assert ps.rules[4].groups == frozenset({"eng"})
    assert ps.version.startswith("sha256:") and len(ps.version) == len("sha256:") + 16
    assert "5 rules (2 allow, 2 deny, 1 hold)" in ps.summary()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("- just a list\n", "p.yaml:1:1: expected a mapping with version, default and rules"),
        ("version: 2\n", "p.yaml:1:10: version: expected 1, got 2"),
        ("rules: []\n", "p.yaml:1:1: version: required key is missing (version: 1)"),
        ("version: 1\ndefault: permit\n", "p.yaml:2:10: default: expected allow, deny or hold, got 'permit'"),
        ("version: 1\nrulez: []\n", "p.yaml:2:1: rulez: unknown key; expected one of version, default, description"),
        ("version: 1\nrules: {a: 1}\n", "p.yaml:2:8: rules: expected a list of rules"),
        (HEAD + "  - allow: {}\n", "p.yaml:3:5: rules[0]: required key id is missing"),
        (HEAD + "  - {id: 'a b', allow: {}}\n", "p.yaml:3:10: rules[0].id: expected an id of letters"),
        (HEAD + "  - {id: a}\n", "p.yaml:3:5: rules[0] (id a): expected exactly one of allow, deny, hold"),
        (
            HEAD + "  - {id: a, allow: {}, deny: {}}\n",
            "p.yaml:3:5: rules[0] (id a): expected exactly one of allow, deny, hold (found allow, deny)",
        ),
        (
            HEAD + "  - {id: a, allow: [x]}\n",
            "p.yaml:3:20: rules[0] (id a).allow: expected a mapping of matchers (or {} for any)",
        ),
        (
            HEAD + "  - id: a\n    groups: [x]\n    allow: {}\n",
            "p.yaml:4:5: rules[0] (id a).groups: unknown key; expected one of id, description, allow, deny, hold "
            "(put matchers inside allow/deny/hold)",
        ),
        (
            HEAD + "  - id: a\n    allow:\n      group: [eng]\n",
            "p.yaml:5:7: rules[0] (id a).allow.group: unknown key; expected one of users, groups",
        ),
        (
            HEAD + "  - id: a\n    allow:\n      groups: []\n",
            "p.yaml:5:15: rules[0] (id a).allow.groups: an empty list matches nothing; leave the key out",
        ),
        (
            HEAD + "  - id: a\n    allow:\n      groups: [eng, 3]\n",
            "p.yaml:5:21: rules[0] (id a).allow.groups[1]: expected a non-empty string",
        ),
        (
            HEAD + "  - id: a\n    allow:\n      groups: {eng: 1}\n",
            "p.yaml:5:15: rules[0] (id a).allow.groups: expected a list of strings",
        ),
        (
            HEAD + "  - id: a\n    allow: {approvers: [dba]}\n",
            "p.yaml:4:13: rules[0] (id a).allow.approvers: approvers are only for hold rules",
        ),
        (
            HEAD + "  - id: a\n    allow: {methods: [tools/cal]}\n",
            "p.yaml:4:22: rules[0] (id a).allow.methods: unknown method 'tools/cal'; expected MCP methods",
        ),
        (
            HEAD + "  - id: a\n    allow: {methods: [prompts/get], tools: [x]}\n",
            "p.yaml:4:22: rules[0] (id a).allow.methods: the rule can never apply",
        ),
        (
            HEAD + "  - {id: a, allow: {}}\n  - {id: b, allow: {}}\n  - {id: a, deny: {}}\n",
            "p.yaml:5:10: rules[2] (id a): duplicate id (first used on line 3)",
        ),
        (
            "version: 1\nrules:\n  - {id: a, allow: {}}\ndefaults:\n  - {id: a, deny: {}}\n",
            "p.yaml:5:10: defaults[0] (id a): duplicate id (first used on line 3)",
        ),
        (HEAD + "  - 42\n", "p.yaml:3:5: rules[0]: expected a rule: a mapping with id and one of allow, deny, hold"),
        ("version: 1\nrules: [\n", "p.yaml:3:1: invalid YAML:"),
        ("version: 1\nversion: 1\n", "p.yaml:2:1: invalid YAML: found duplicate key"),
    ],
)
def test_structure_errors(text: str, expected: str) -> None:
    got = one(text)
    assert got.startswith(expected), got


def when(expr: str, tier: str = "rules") -> str:
    return one(f"version: 1\n{tier}:\n  - id: r1\n    deny:\n      when: '{expr}'\n")


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        (
            "arguments.table.startsWith(",
            "p.yaml:5:13: rules[0] (id r1).deny.when: Syntax error: mismatched input '<EOF>'",
        ),
        ("argumnts.table == 1", "undeclared reference to 'argumnts.table' (column 9 of the expression)"),
        ("principal.group.size() > 0", "undeclared reference to 'principal.group'"),
        ('arguments.path.startswith("/etc")', "undeclared reference to 'startswith'"),
        ("server + 1 == 2", "found no matching overload for '_+_' applied to '(string, int)'"),
        ("target.matches(1)", "found no matching overload for 'matches' applied to '(string, int)'"),
        ('target.matches("(")', 'invalid regular expression "(": missing ): ('),
        ('matches(target, "[z-a]")', 'invalid regular expression "[z-a]": invalid character class range: z-a'),
        ("server.size()", "expected a boolean expression, this one gives int"),
        ("annotations.readOnlyHint", "annotations may only be used in the `defaults` rules"),
        ("   ", "expected a CEL expression (a non-empty string)"),
        ("x" * 5000, "expression longer than 4096 characters"),
        ("(" * 200 + "true" + ")" * 200, "recursion limit exceeded"),
    ],
)
def test_condition_errors_at_load_time(expr: str, expected: str) -> None:
    got = when(expr)
    assert expected in got, got
    assert got.startswith("p.yaml:5:13: rules[0] (id r1).deny.when: "), got


def test_annotations_are_declared_in_defaults_only() -> None:
    load_policy_text("version: 1\ndefaults:\n  - {id: d, hold: {when: annotations.destructiveHint}}\n")
    got = when("annotations.readOnlyHnt", tier="defaults")
    assert "undeclared reference to 'annotations.readOnlyHnt'" in got


def test_non_string_when() -> None:
    assert "expected a CEL expression" in one(HEAD + "  - {id: a, deny: {when: 42}}\n")


def test_every_problem_is_reported_at_once() -> None:
    found = problems(
        "version: 3\ndefault: maybe\nrules:\n"
        "  - {id: a, allow: {groups: []}}\n"
        "  - {id: b, deny: {when: 'nope'}}\n"
        "  - {id: c, hold: {servers: [x], colour: red}}\n"
    )
    assert [f.split(":")[1] for f in found] == ["1", "2", "4", "5", "6"], found


def test_version_ignores_comments_layout_and_set_order() -> None:
    a = load_policy_text(HEAD + "  - {id: a, allow: {groups: [x, y], tools: [p, q]}}\n")
    b = load_policy_text(
        "# a comment\nversion: 1\nrules:\n  - id: a\n    allow:\n      tools: [q, p]   # reordered\n"
        "      groups: [y, x]\n"
    )
    c = load_policy_text(HEAD + "  - {id: a, allow: {groups: [x, y], tools: [p, q, r]}}\n")
    d = load_policy_text(HEAD + "  - {id: a, deny: {groups: [x, y], tools: [p, q]}}\n")
    assert a.version == b.version
    assert len({a.version, c.version, d.version}) == 3


def test_load_policy_reads_files(tmp_path: Path) -> None:
    f = tmp_path / "policy.yaml"
    f.write_text("version: 1\nrules:\n  - {id: a, allow: {}}\n")
    ps = load_policy(f)
    assert ps.source == str(f) and ps.rules[0].id == "a"
    with pytest.raises(PolicyError, match="cannot read the file"):
        load_policy(tmp_path / "missing.yaml")
    f.write_bytes(b"version: 1\n\xff\xfe")
    with pytest.raises(PolicyError, match="not UTF-8"):
        load_policy(f)
    f.write_bytes(b"version: 1\n" + b"#" * (4 * 1024 * 1024 + 1))
    with pytest.raises(PolicyError, match="larger than"):
        load_policy(f)
    f.write_text("version: 1\nrules:\n  - {id: a, allow: {groups: []}}\n")
    with pytest.raises(PolicyError) as info:
        load_policy(f)
    assert info.value.problems[0].startswith(f"{f}:3:")
