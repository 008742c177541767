"""Property-based tests (hypothesis) of the policy engine's invariants."""

from __future__ import annotations

import dataclasses
import fnmatch
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from portcullis.policy import PolicyEngine, PolicyRequest, Principal, load_policy_text
from portcullis.policy.engine import _Data
from portcullis.policy.expr import ConditionError, bounded, compile_condition
from portcullis.policy.rules import GlobSet
from tests.unit.test_policy_engine import MATRIX_POLICY

POLICY = load_policy_text(MATRIX_POLICY, "matrix.yaml")
ENGINE = PolicyEngine(POLICY)

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

GROUPS = ["eng", "admin", "data", "dba", "contractors", "ops", "finance", "other"]
SERVERS = ["github", "gitlab", "prod-db", "fs", "docs", "billing", "x"]
TOOLS = ["get_issue", "create_issue", "force_push", "delete_rows", "drop_table", "read_file", "refund", "zz"]
METHODS = ["tools/call", "resources/read", "prompts/get", "tools/list", "resources/list", "prompts/list", "ping"]

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
known_args = st.fixed_dictionaries(
    {},
    optional={
        "table": st.sampled_from(["tmp_a", "users", "tmp_", ""]) | json_scalars,
        "path": st.sampled_from(["/etc/passwd", "/srv/../etc/x", "/srv/a", "etc", "//etc"]) | json_scalars,
        "amount": st.integers(-10, 2000) | st.floats(0, 2000) | json_scalars,
        "title": json_values,
    },
)
arguments = known_args | st.dictionaries(st.text(max_size=8), json_values, max_size=5)
annotation_maps = st.none() | st.fixed_dictionaries(
    {},
    optional={
        "readOnlyHint": st.booleans() | json_scalars,
        "destructiveHint": st.booleans(),
        "openWorldHint": st.booleans(),
        "idempotentHint": st.booleans(),
    },
)
principals = st.builds(
    Principal,
    subject=st.sampled_from(["u1", "f-123", "root"]) | st.text(max_size=10),
    email=st.none() | st.sampled_from(["frank@example.com", "Frank@Example.COM", "x@y"]),
    groups=st.frozensets(st.sampled_from(GROUPS), max_size=3),
)


@st.composite
def requests(draw: st.DrawFn) -> PolicyRequest:
    method = draw(st.sampled_from(METHODS))
    target: str | None
    if method == "resources/read":
        target = draw(st.sampled_from(["docs://a", "docs://", "file:///x"]) | st.text(max_size=10))
    elif method in ("tools/call", "prompts/get"):
        target = draw(st.sampled_from([*TOOLS, "summarize", "explain_x"]) | st.text(max_size=10))
    else:
        target = draw(st.none() | st.text(max_size=5))
    return PolicyRequest(
        draw(principals),
        draw(st.sampled_from(SERVERS) | st.text(max_size=8)),
        method,
        target,
        draw(arguments),
        draw(annotation_maps),
    )


@SETTINGS
@given(requests())
def test_explain_agrees_with_decide(req: PolicyRequest) -> None:
    d = ENGINE.decide(req)
    assert d.effect in ("allow", "deny", "hold")
    assert ENGINE.explain(req).decision == d


@SETTINGS
@given(requests(), st.randoms(use_true_random=False))
def test_rule_order_does_not_change_the_effect(req: PolicyRequest, rnd: Any) -> None:
    rules = list(POLICY.rules)
    defaults = list(POLICY.defaults)
    rnd.shuffle(rules)
    rnd.shuffle(defaults)
    shuffled = PolicyEngine(dataclasses.replace(POLICY, rules=tuple(rules), defaults=tuple(defaults)))
    assert shuffled.decide(req).effect == ENGINE.decide(req).effect


@SETTINGS
@given(principals, st.sampled_from(SERVERS), st.sampled_from(TOOLS), arguments, annotation_maps)
def test_what_can_be_called_is_listed(
    p: Principal, server: str, tool: str, args: dict[str, Any], ann: dict[str, Any] | None
) -> None:
    """visible() over-approximates: a tool that some call allows or holds is always listed."""
    d = ENGINE.decide(PolicyRequest(p, server, "tools/call", tool, args, ann))
    item = {"name": tool} if ann is None else {"name": tool, "annotations": ann}
    if d.effect != "deny":
        assert ENGINE.visible(p, server, "tool", [item]) == [item], d
    # and a certain deny (no condition involved) always hides it
    rule = next((r for r in POLICY.all_rules() if r.id == d.rule), None)
    if d.effect == "deny" and rule is not None and rule.condition is None and rule.tier == "rules":
        assert ENGINE.visible(p, server, "tool", [item]) == []


@SETTINGS
@given(requests(), json_values)
def test_decide_never_raises_on_any_arguments(req: PolicyRequest, junk: Any) -> None:
    for args in (req.arguments, {"table": junk, "path": junk, "amount": junk}, {"junk": junk}):
        ENGINE.decide(dataclasses.replace(req, arguments=args))


GLOB_ALPHABET = st.sampled_from(list("ab/_.*?"))


@SETTINGS
@given(st.lists(st.text(GLOB_ALPHABET, min_size=1, max_size=6), min_size=1, max_size=4), st.text("ab/_.", max_size=8))
def test_globs_agree_with_fnmatch(patterns: list[str], name: str) -> None:
    expected = any(fnmatch.fnmatchcase(name, p) for p in patterns)
    assert GlobSet(tuple(patterns)).match(name) == expected


NARROWABLE = [
    "arguments.a == 1",
    'has(arguments.b) && arguments.b.startsWith("x")',
    'arguments["c"] == "y" || has(arguments.a)',
    "size(arguments) > 1",
    'arguments.exists(k, k == "a")',
    "has(arguments.a) && arguments.a > 0 && has(arguments.c)",
]
CONDITIONS = [compile_condition(src, annotations=False) for src in NARROWABLE]


@SETTINGS
@given(st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), json_values, max_size=4))
def test_narrowed_arguments_evaluate_like_the_whole_map(args: dict[str, Any]) -> None:
    """Reading only the keys a condition names gives the answer reading the whole map gives."""
    p = Principal("u")
    for cond in CONDITIONS:
        data = _Data(p, "s", "tools/call", "t", args, None)
        try:
            narrowed: Any = cond.evaluate(data.for_condition(cond))
        except ConditionError:
            narrowed = "error"
        try:
            whole: Any = cond.evaluate({"arguments": args})
        except ConditionError:
            whole = "error"
        # the same answer; only an argument the condition does not read (one CEL cannot take, say an integer
        # beyond 64 bits) can make the whole map fail where the narrowed one does not
        if whole != "error":
            assert narrowed == whole, (cond.source, args)
        if narrowed == "error":
            assert whole == "error", (cond.source, args)


@SETTINGS
@given(json_values)
def test_bounded_returns_plain_equal_data(value: Any) -> None:
    out = bounded(value)
    assert out == value or out != out  # NaN is never equal to itself


def test_hypothesis_is_installed() -> None:
    import hypothesis

    assert hypothesis.__version__
