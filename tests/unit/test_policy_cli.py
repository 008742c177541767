"""``portcullis policy check`` and ``portcullis policy test``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from portcullis.cli.policy_cmd import policy_group

POLICY = """version: 1
default: deny
rules:
  - id: eng-read
    allow: {groups: [eng], servers: [github], tools: ["get_*"]}
  - id: no-prod-drops
    hold: {servers: [prod-db], tools: ["drop_*"], approvers: [dba]}
  - id: tmp-tables-only
    deny: {servers: [prod-db], tools: [delete_rows], when: '!(arguments.table.startsWith("tmp_"))'}
  - id: dba
    allow: {groups: [dba], servers: [prod-db]}
"""


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    f = tmp_path / "policy.yaml"
    f.write_text(POLICY)
    return f


def run(*args: str) -> tuple[int, str, str]:
    res = CliRunner().invoke(policy_group, list(args))
    return res.exit_code, res.stdout, res.stderr


def test_check_ok(policy_file: Path) -> None:
    code, out, _ = run("check", str(policy_file))
    assert code == 0
    assert out.startswith(f"{policy_file}: OK: 4 rules (2 allow, 1 deny, 1 hold), 0 defaults, default deny, version ")
    code, out, _ = run("check", str(policy_file), "--json")
    doc = json.loads(out)
    assert code == 0 and doc["ok"] and doc["rules"] == ["eng-read", "no-prod-drops", "tmp-tables-only", "dba"]


def test_check_errors(tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text("version: 1\nrules:\n  - id: x\n    allow:\n      when: 'argumnts.a == 1'\n")
    code, out, err = run("check", str(f))
    assert code == 2 and out == ""
    assert err.startswith(f"error: {f}:5:13: rules[0] (id x).allow.when: undeclared reference to 'argumnts.a'")
    code, out, _ = run("check", str(f), "--json")
    assert code == 2 and json.loads(out)["problems"][0].startswith(f"{f}:5:13:")
    code, _, err = run("check", str(tmp_path / "nope.yaml"))
    assert code == 2 and "cannot read the file" in err


def test_test_explains_the_deciding_rule(policy_file: Path) -> None:
    code, out, _ = run(
        "test",
        str(policy_file),
        "--user",
        "bob",
        "--groups",
        "dba, ops",
        "--server",
        "prod-db",
        "--target",
        "delete_rows",
        "--args",
        '{"table": "users"}',
    )
    assert code == 0, out
    assert "decision: deny" in out
    assert f"rule:     tmp-tables-only (rules, {policy_file}:8)" in out
    assert "=> deny  tmp-tables-only" in out and "condition is true" in out
    assert " + allow dba" in out and " - hold  no-prod-drops" in out


def test_test_hold_json_and_expect(policy_file: Path) -> None:
    args = ["test", str(policy_file), "--user", "u", "--server", "prod-db", "--target", "drop_table", "--json"]
    code, out, _ = run(*args)
    doc = json.loads(out)
    assert code == 0 and doc["decision"] == "hold" and doc["rule"] == "no-prod-drops" and doc["approvers"] == ["dba"]
    assert [t["rule"] for t in doc["trace"]] == ["eng-read", "no-prod-drops", "tmp-tables-only", "dba"]
    assert run(*args, "--expect", "hold")[0] == 0
    code, _, err = run(*args[:-1], "--expect", "allow")
    assert code == 1 and "expected allow, got hold" in err


def test_test_missing_argument_is_explained(policy_file: Path) -> None:
    code, out, _ = run(
        "test", str(policy_file), "--user", "u", "--groups", "dba", "--server", "prod-db", "--target", "delete_rows"
    )
    assert code == 0 and "decision: deny" in out and 'no argument "table"' in out and " error " in out


def test_test_list_items(policy_file: Path) -> None:
    code, out, _ = run(
        "test",
        str(policy_file),
        "--user",
        "a",
        "--groups",
        "eng",
        "--server",
        "github",
        "--method",
        "tools/list",
        "--items",
        '["get_issue", {"name": "create_issue"}]',
    )
    assert code == 0
    assert "visible (1): get_issue" in out and "hidden  (1): create_issue" in out
    code, out, _ = run(
        "test",
        str(policy_file),
        "--user",
        "a",
        "--server",
        "github",
        "--method",
        "tools/list",
        "--items",
        '["get_issue"]',
        "--json",
    )
    doc = json.loads(out)
    assert doc["decision"] == "deny" and doc["visible"] == [] and doc["hidden"] == [{"name": "get_issue"}]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--args", "{not json"], "--args: not valid JSON"),
        (["--args", "[1]"], "--args: expected a JSON object"),
        (["--annotations", "1"], "--annotations: expected a JSON object"),
        (["--items", "[]"], "--items needs a list method"),
    ],
)
def test_test_bad_input(policy_file: Path, extra: list[str], message: str) -> None:
    code, _, err = run("test", str(policy_file), "--user", "u", "--server", "s", "--target", "t", *extra)
    assert code == 2 and message in err


def test_test_with_a_broken_policy(tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text("version: 9\n")
    code, _, err = run("test", str(f), "--user", "u", "--server", "s")
    assert code == 2 and "version: expected 1, got 9" in err
