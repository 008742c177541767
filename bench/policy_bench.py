"""Policy engine benchmark: the same ~30-rule policy in each candidate engine, CPU µs per decision.

    .venv/bin/python bench/policy_bench.py                # the chosen engine (portcullis.policy) alone
    VENV/bin/python bench/policy_bench.py --all           # plus every candidate importable in VENV:
                                                          #   cedarpy, common-expression-language, cel-python
    ... --json bench/results/policy-<date>.json           # raw figures

Candidates (each evaluates the same rules and must agree on the expected effect of every request first):

- ``hybrid``     portcullis.policy: YAML rules compiled into a Python matcher (server/method/target candidates
                 cached per request shape, group sets), CEL (cel-expr-python, Google's C++ CEL) only for `when`.
- ``cel-cpp``    every rule as one CEL expression (matchers + condition), cel-expr-python, all rules per request.
- ``cel-rust``   the same expressions on common-expression-language (Rust CEL bindings).
- ``cedar``      the rules as Cedar policies (cedarpy; deny = forbid, hold = permit with @effect("hold")), one
                 ``is_authorized`` per request with a pre-parsed PolicySet and empty entity set, groups in context.
- ``celpy``      cel-python (pure Python CEL): one condition only — a full policy is far out of budget.

Figures: thread CPU time (``time.thread_time_ns``) per operation; each case runs ``--repeats`` times over
``--iterations`` operations after a warm-up, and the median of the per-repeat means is reported.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from portcullis.policy import PolicyEngine, PolicyRequest, Principal, load_policy_text

POLICY_YAML = r"""
version: 1
default: deny
rules:
  # engineering
  - id: eng-read
    allow: {groups: [eng], servers: [github, gitlab, docs, jira], tools: ["get_*", "list_*", "search_*", "read_*"]}
  - id: eng-write-code
    allow:
      groups: [eng]
      servers: [github, gitlab]
      tools: [create_issue, create_pull_request, add_comment, update_issue]
  - id: eng-jira
    allow: {groups: [eng, support], servers: [jira], tools: [create_ticket, update_ticket, add_comment]}
  - id: eng-ci
    allow: {groups: [eng], servers: [ci], tools: [trigger_build, get_build, list_builds]}
  - id: eng-deploy-nonprod
    allow: {groups: [eng], servers: [ci], tools: [deploy], when: 'arguments.environment in ["dev", "staging"]'}
  - id: deploy-prod-hold
    hold:
      groups: [eng, ops]
      servers: [ci]
      tools: [deploy]
      when: 'arguments.environment == "production"'
      approvers: [release-managers]
  - id: no-force-push
    deny: {servers: [github, gitlab], tools: [force_push, delete_branch, delete_repository]}
  # data
  - id: data-read
    allow:
      groups: [data, analysts]
      servers: [prod-db, staging-db, warehouse]
      tools: [query, describe_table, list_tables]
  - id: data-staging-write
    allow: {groups: [data], servers: [staging-db], tools: [insert_rows, update_rows, delete_rows, create_table]}
  - id: data-prod-tmp-write
    allow:
      groups: [data]
      servers: [prod-db]
      tools: [insert_rows, delete_rows, create_table]
      when: 'arguments.table.startsWith("tmp_")'
  - id: prod-drops-hold
    hold: {servers: [prod-db, warehouse], tools: ["drop_*", truncate_table], approvers: [dba]}
  - id: analysts-select-only
    deny:
      groups: [analysts]
      servers: [prod-db, warehouse]
      tools: [query]
      when: '!arguments.sql.matches("(?i)^\\s*select\\b")'
  - id: query-row-limit
    deny: {servers: [prod-db], tools: [query], when: 'has(arguments.limit) && arguments.limit > 10000'}
  # ops and files
  - id: fs-read
    allow: {groups: [ops, eng], servers: [fs], tools: [read_file, list_directory, stat, search_files]}
  - id: ops-fs-write
    allow: {groups: [ops], servers: [fs], tools: [write_file, move_file, create_directory]}
  - id: fs-no-etc
    deny: {servers: [fs], when: 'has(arguments.path) && pathWithin(arguments.path, "/etc")'}
  - id: fs-no-secrets
    deny: {servers: [fs], when: 'has(arguments.path) && arguments.path.matches("(^|/)(\\.env|id_rsa|[^/]*\\.pem)$")'}
  - id: ops-k8s-read
    allow: {groups: [ops], servers: [k8s], tools: ["get_*", "list_*", describe_pod, logs]}
  - id: k8s-prod-changes-hold
    hold:
      groups: [ops]
      servers: [k8s]
      tools: [scale_deployment, restart_deployment, apply_manifest]
      when: 'arguments.namespace.startsWith("prod")'
      approvers: [sre-leads]
  - id: ops-k8s-nonprod
    allow:
      groups: [ops]
      servers: [k8s]
      tools: [scale_deployment, restart_deployment, apply_manifest]
      when: '!arguments.namespace.startsWith("prod")'
  # business
  - id: finance-billing-read
    allow: {groups: [finance], servers: [billing], tools: [get_invoice, list_invoices, get_customer]}
  - id: finance-refunds
    allow: {groups: [finance], servers: [billing], tools: [refund], when: 'double(arguments.amount) <= 500.0'}
  - id: finance-big-refunds-hold
    hold:
      groups: [finance]
      servers: [billing]
      tools: [refund]
      when: 'double(arguments.amount) > 500.0'
      approvers: [finance-leads]
  - id: support-crm
    allow: {groups: [support], servers: [crm], tools: ["get_*", "search_*", add_note]}
  - id: slack-read
    allow: {servers: [slack], tools: [list_channels, read_channel, search_messages]}
  - id: slack-post
    allow:
      groups: [eng, ops, support]
      servers: [slack]
      tools: [post_message]
      when: 'arguments.channel.startsWith("#") && !(arguments.channel in ["#announcements", "#all-hands"])'
  # everyone, admins, fences
  - id: docs-everyone
    allow: {servers: [docs], tools: ["*"]}
  - id: contractors-fenced
    deny: {groups: [contractors], servers: [prod-db, billing, k8s, warehouse]}
  - id: admins
    allow: {groups: [admin]}
  - id: destructive-non-admin
    deny: {except_groups: [admin, dba], tools: [delete_repository, "drop_*", "purge_*"]}
defaults:
  - id: staff-read-only-tools
    allow: {groups: [eng, ops, data], when: 'annotations.readOnlyHint && !annotations.openWorldHint'}
"""

ALICE = Principal("alice", "alice@example.com", frozenset({"eng"}))
BOB = Principal("bob", "bob@example.com", frozenset({"data"}))
CAROL = Principal("carol", "carol@example.com", frozenset({"analysts"}))
DAVE = Principal("dave", "dave@example.com", frozenset({"ops"}))
ERIN = Principal("erin", "erin@example.com", frozenset({"dba", "data"}))
FRANK = Principal("frank", "frank@example.com", frozenset({"finance"}))

WIDE_ARGS = {"path": "/srv/app/readme.md", **{f"opt{i}": f"value-{i:02d}-xxxxxxxxxxxx" for i in range(29)}}

# (name, request, expected effect)
REQUESTS: list[tuple[str, PolicyRequest, str]] = [
    (
        "allow, no condition",
        PolicyRequest(ALICE, "github", "tools/call", "get_issue", {"owner": "acme", "repo": "web", "number": 42}),
        "allow",
    ),
    ("allow via condition", PolicyRequest(BOB, "prod-db", "tools/call", "delete_rows", {"table": "tmp_x"}), "allow"),
    (
        "2 deny conditions pass",
        PolicyRequest(CAROL, "prod-db", "tools/call", "query", {"sql": "SELECT * FROM t", "limit": 100}),
        "allow",
    ),
    (
        "deny via condition",
        PolicyRequest(DAVE, "fs", "tools/call", "write_file", {"path": "/etc/passwd", "content": "x"}),
        "deny",
    ),
    ("hold, no condition", PolicyRequest(ERIN, "prod-db", "tools/call", "drop_table", {"table": "users"}), "hold"),
    ("hold via condition", PolicyRequest(FRANK, "billing", "tools/call", "refund", {"amount": 1200}), "hold"),
    ("default deny", PolicyRequest(ALICE, "billing", "tools/call", "refund", {"amount": 5}), "deny"),
    ("30 arguments", PolicyRequest(DAVE, "fs", "tools/call", "read_file", WIDE_ARGS), "allow"),
]

LIST_TOOLS = [
    {"name": n}
    for n in (
        [f"get_{i}" for i in range(25)]
        + [f"list_{i}" for i in range(15)]
        + [f"search_{i}" for i in range(10)]
        + ["create_issue", "create_pull_request", "add_comment", "update_issue", "force_push", "delete_branch"]
        + [f"admin_op_{i}" for i in range(44)]
    )
]
assert len(LIST_TOOLS) == 100


BEST: dict[tuple[str, str], float] = {}  # (candidate, case) -> the fastest repeat, to show the machine's noise


def measure(fn: Callable[[], Any], iterations: int, repeats: int, key: tuple[str, str] | None = None) -> float:
    """Median over ``repeats`` of the mean thread-CPU µs per call of ``fn`` (the fastest repeat goes to BEST)."""
    for _ in range(max(50, iterations // 10)):
        fn()
    means = []
    for _ in range(repeats):
        t0 = time.thread_time_ns()
        for _ in range(iterations):
            fn()
        means.append((time.thread_time_ns() - t0) / iterations / 1000)
    if key is not None:
        BEST[key] = min(means)
    return statistics.median(means)


# -------------------------------------------------------------------------------------------------------------
# The candidates. Each returns (decide(req) -> effect, filter(principal, server, items) -> list or None).


def make_hybrid() -> tuple[Callable[[PolicyRequest], str], Callable[..., list[Any]]]:
    engine = PolicyEngine(load_policy_text(POLICY_YAML, "bench.yaml"))
    return (lambda req: engine.decide(req).effect), (lambda p, s, items: engine.visible(p, s, "tool", items))


def _rules() -> list[dict[str, Any]]:
    ps = load_policy_text(POLICY_YAML, "bench.yaml")
    out = []
    for r in ps.rules:
        out.append(
            {
                "id": r.id,
                "effect": r.effect,
                "groups": sorted(r.groups) if r.groups else None,
                "except_groups": sorted(r.except_groups) if r.except_groups else None,
                "servers": list(r.servers.patterns) if r.servers else None,
                "tools": list(r.tools.patterns) if r.tools else None,
                "when": r.condition.source if r.condition else None,
            }
        )
    return out


def _cel_rule_expr(r: dict[str, Any]) -> str:
    """One CEL expression per rule: its matchers and its condition."""
    parts = ['method == "tools/call"']
    if r["groups"]:
        parts.append(f"principal_groups.exists(g, g in {json.dumps(r['groups'])})")
    if r["except_groups"]:
        parts.append(f"!principal_groups.exists(g, g in {json.dumps(r['except_groups'])})")
    if r["servers"]:
        parts.append(f"server in {json.dumps(r['servers'])}")
    if r["tools"] and "*" not in r["tools"]:
        exact = [t for t in r["tools"] if "*" not in t]
        alts = [f"target in {json.dumps(exact)}"] if exact else []
        alts += [f"target.startsWith({json.dumps(t[:-1])})" for t in r["tools"] if t.endswith("*")]
        parts.append("(" + " || ".join(alts) + ")")
    if r["when"]:
        parts.append("(" + r["when"] + ")")
    return " && ".join(parts)


def _combine(results: list[tuple[str, bool | None]]) -> str:
    """deny > hold > allow; an error (None) denies."""
    effects = {e for e, ok in results if ok}
    if any(ok is None for _, ok in results) or "deny" in effects:
        return "deny"
    if "hold" in effects:
        return "hold"
    return "allow" if "allow" in effects else "deny"


def make_cel_cpp() -> tuple[Callable[[PolicyRequest], str], Callable[..., list[Any]]]:
    from cel_expr_python import cel

    from portcullis.policy.expr import _path_within

    T = cel.Type
    env = cel.NewEnv(
        variables={
            "principal_groups": T.List(T.STRING),
            "server": T.STRING,
            "method": T.STRING,
            "target": T.STRING,
            "arguments": T.Map(T.STRING, T.DYN),
        },
        functions=[
            cel.FunctionDecl(
                "pathWithin",
                [cel.Overload("pw", return_type=T.BOOL, parameters=[T.STRING, T.STRING], impl=_path_within)],
            )
        ],
    )
    progs = [(r["effect"], env.compile(_cel_rule_expr(r))) for r in _rules()]

    def decide(req: PolicyRequest) -> str:
        act = env.Activation(
            {
                "principal_groups": list(req.principal.groups),
                "server": req.server,
                "method": req.method,
                "target": req.target or "",
                "arguments": dict(req.arguments),
            }
        )
        res: list[tuple[str, bool | None]] = []
        for effect, prog in progs:
            v = prog.eval(act).value()
            res.append((effect, v if isinstance(v, bool) else None))
        return _combine(res)

    return decide, lambda p, s, items: [
        i for i in items if decide(PolicyRequest(p, s, "tools/call", i["name"], {})) != "deny"
    ]


def make_cel_rust() -> tuple[Callable[[PolicyRequest], str], Callable[..., list[Any]]]:
    import cel

    from portcullis.policy.expr import _path_within

    progs = [(r["effect"], cel.compile(_cel_rule_expr(r))) for r in _rules()]

    def decide(req: PolicyRequest) -> str:
        ctx = cel.Context(
            variables={
                "principal_groups": list(req.principal.groups),
                "server": req.server,
                "method": req.method,
                "target": req.target or "",
                "arguments": dict(req.arguments),
            },
            functions={"pathWithin": _path_within},
        )
        res: list[tuple[str, bool | None]] = []
        for effect, prog in progs:
            try:
                v = prog.execute(ctx)
                res.append((effect, v if isinstance(v, bool) else None))
            except Exception:
                res.append((effect, None))
        return _combine(res)

    return decide, lambda p, s, items: [
        i for i in items if decide(PolicyRequest(p, s, "tools/call", i["name"], {})) != "deny"
    ]


CEDAR_WHEN = {
    "eng-deploy-nonprod": '["dev", "staging"].contains(context.arguments.environment)',
    "deploy-prod-hold": 'context.arguments.environment == "production"',
    "data-prod-tmp-write": 'context.arguments.table like "tmp_*"',
    # Cedar has no regular expressions and no case folding: the closest is a pair of patterns
    "analysts-select-only": '!(context.arguments.sql like "select*" || context.arguments.sql like "SELECT*")',
    "query-row-limit": "context.arguments has limit && context.arguments.limit > 10000",
    # no path normalisation either
    "fs-no-etc": "context.arguments has path && "
    '(context.arguments.path == "/etc" || context.arguments.path like "/etc/*")',
    "fs-no-secrets": 'context.arguments has path && (context.arguments.path like "*.pem" || '
    'context.arguments.path like "*/.env" || context.arguments.path == ".env" || '
    'context.arguments.path like "*/id_rsa")',
    "k8s-prod-changes-hold": 'context.arguments.namespace like "prod*"',
    "ops-k8s-nonprod": '!(context.arguments.namespace like "prod*")',
    "finance-refunds": "context.arguments.amount <= 500",
    "finance-big-refunds-hold": "context.arguments.amount > 500",
    "slack-post": 'context.arguments.channel like "#*" && '
    '!(["#announcements", "#all-hands"].contains(context.arguments.channel))',
}


def cedar_policies() -> str:
    out = []
    for r in _rules():
        conds = []
        if r["groups"]:
            conds.append(f"context.groups.containsAny({json.dumps(r['groups'])})")
        if r["except_groups"]:
            conds.append(f"!context.groups.containsAny({json.dumps(r['except_groups'])})")
        if r["servers"]:
            conds.append(f"{json.dumps(r['servers'])}.contains(context.server)")
        if r["tools"] and "*" not in r["tools"]:
            alts = [
                f"context.target like {json.dumps(t)}" if "*" in t else f"context.target == {json.dumps(t)}"
                for t in r["tools"]
            ]
            conds.append("(" + " || ".join(alts) + ")")
        if r["when"]:
            conds.append("(" + CEDAR_WHEN[r["id"]] + ")")
        verb = "forbid" if r["effect"] == "deny" else "permit"
        head = f'@id("{r["id"]}")\n@effect("{r["effect"]}")\n{verb}(principal, action, resource)'
        out.append(head + (f"\nwhen {{ {' && '.join(conds)} }}" if conds else "") + ";")
    return "\n\n".join(out)


def make_cedar() -> tuple[Callable[[PolicyRequest], str], Callable[..., list[Any]]]:
    import cedarpy

    ps = cedarpy.PolicySet.from_str(cedar_policies())
    holds = {r["id"] for r in _rules() if r["effect"] == "hold"}
    ents = cedarpy.Entities.from_json_str("[]")

    def req_of(req: PolicyRequest) -> dict[str, Any]:
        return {
            "principal": {"type": "User", "id": req.principal.subject},
            "action": {"type": "Action", "id": req.method},
            "resource": {"type": "Server", "id": req.server},
            "context": {
                "groups": sorted(req.principal.groups),
                "server": req.server,
                "target": req.target or "",
                "arguments": dict(req.arguments),
            },
        }

    def effect(res: Any) -> str:
        diag = res.diagnostics
        if diag.errors:  # Cedar skips a policy that errors: a forbid that errors would not deny. Fail closed.
            return "deny"
        if not res.allowed:
            return "deny"
        ids = diag.id_annotations_by_reason
        return "hold" if any(v in holds for v in ids.values()) else "allow"

    def decide(req: PolicyRequest) -> str:
        return effect(cedarpy.is_authorized(req_of(req), ps, ents))

    def filt(p: Principal, s: str, items: list[dict[str, Any]]) -> list[Any]:
        reqs = [req_of(PolicyRequest(p, s, "tools/call", i["name"], {})) for i in items]
        res = cedarpy.is_authorized_batch(reqs, ps, ents)
        return [i for i, r in zip(items, res, strict=True) if effect(r) != "deny"]

    return decide, filt


def condition_costs(iterations: int, repeats: int) -> dict[str, dict[str, float]]:
    """One condition, ``arguments.table starts with "tmp_"``, per engine, with the per-request context built each
    time: what a hybrid pays per condition it evaluates. ``1 arg``: {table}; ``30 args``: 29 more strings."""
    small = {"table": "tmp_x"}
    wide = {"table": "tmp_x", **{f"opt{i}": f"value-{i:02d}-xxxxxxxxxxxx" for i in range(29)}}
    out: dict[str, dict[str, float]] = {}

    from portcullis.policy.expr import compile_condition

    cond = compile_condition('arguments.table.startsWith("tmp_")', annotations=False)
    out["cel-cpp (as used: only the keys read)"] = {
        "1 arg": measure(lambda: cond.evaluate({"arguments": {"table": small["table"]}}), iterations, repeats),
        "30 args": measure(lambda: cond.evaluate({"arguments": {"table": wide["table"]}}), iterations, repeats),
    }
    out["cel-cpp (whole map)"] = {
        "1 arg": measure(lambda: cond.evaluate({"arguments": small}), iterations, repeats),
        "30 args": measure(lambda: cond.evaluate({"arguments": wide}), iterations, repeats),
    }
    try:
        import cel

        prog = cel.compile('arguments.table.startsWith("tmp_")')
        out["cel-rust"] = {
            "1 arg": measure(lambda: prog.execute(cel.Context(variables={"arguments": small})), iterations, repeats),
            "30 args": measure(lambda: prog.execute(cel.Context(variables={"arguments": wide})), iterations, repeats),
        }
    except ImportError:
        pass
    try:
        import cedarpy

        ps = cedarpy.PolicySet.from_str('permit(principal, action, resource) when { context.table like "tmp_*" };')
        ents = cedarpy.Entities.from_json_str("[]")

        def cedar(args: dict[str, Any]) -> bool:
            req = {
                "principal": {"type": "User", "id": "u"},
                "action": {"type": "Action", "id": "a"},
                "resource": {"type": "Server", "id": "s"},
                "context": args,
            }
            return bool(cedarpy.is_authorized(req, ps, ents).allowed)

        out["cedar"] = {
            "1 arg": measure(lambda: cedar(small), iterations, repeats),
            "30 args": measure(lambda: cedar(wide), iterations, repeats),
        }
    except ImportError:
        pass
    return out


def celpy_one_condition(iterations: int, repeats: int) -> float:
    import celpy

    env = celpy.Environment()
    prg = env.program(env.compile('arguments.table.startsWith("tmp_")'))

    def run() -> None:
        prg.evaluate({"arguments": celpy.json_to_cel({"table": "tmp_x"})})

    return measure(run, max(iterations // 20, 50), repeats)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--all", action="store_true", help="also measure every importable candidate engine")
    ap.add_argument("--iterations", type=int, default=5000)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--json", type=Path, help="write the raw figures here")
    args = ap.parse_args()

    makers: dict[str, Callable[[], tuple[Callable[[PolicyRequest], str], Callable[..., list[Any]]]]] = {
        "hybrid": make_hybrid
    }
    if args.all:
        makers.update({"cel-cpp": make_cel_cpp, "cel-rust": make_cel_rust, "cedar": make_cedar})
    results: dict[str, dict[str, float]] = {}
    notes: dict[str, str] = {}
    for name, maker in makers.items():
        try:
            t0 = time.perf_counter()
            decide, filt = maker()
            load_ms = (time.perf_counter() - t0) * 1000
        except ImportError as exc:
            notes[name] = f"not installed: {exc}"
            continue
        for label, req, expected in REQUESTS:
            got = decide(req)
            if got != expected:
                raise SystemExit(f"{name}: {label}: expected {expected}, got {got}")
        row: dict[str, float] = {"load ms": load_ms}
        for label, req, _ in REQUESTS:
            row[label] = measure(
                lambda req=req, decide=decide: decide(req),  # type: ignore[misc]
                args.iterations,
                args.repeats,
                (name, label),
            )
        row["median of requests"] = statistics.median(row[label] for label, _, _ in REQUESTS)
        visible = filt(ALICE, "github", LIST_TOOLS)
        row["list 100: visible"] = float(len(visible))
        row["list 100"] = measure(
            lambda filt=filt: filt(ALICE, "github", LIST_TOOLS),  # type: ignore[misc]
            max(args.iterations // 50, 20),
            args.repeats,
            (name, "list 100"),
        )
        results[name] = row
        print(f"{name}: done", file=sys.stderr)
    if args.all:
        try:
            results["celpy"] = {"one condition": celpy_one_condition(args.iterations, args.repeats)}
        except ImportError as exc:
            notes["celpy"] = f"not installed: {exc}"

    conditions = condition_costs(args.iterations, args.repeats)
    names = [n for n in results if n != "celpy"]
    labels = ["load ms"] + [label for label, _, _ in REQUESTS] + ["median of requests", "list 100", "list 100: visible"]
    print(
        f"\npolicy: {len(_rules())} rules + 1 default-tier rule; thread CPU µs per decision, median (fastest) of "
        f"{args.repeats} repeats x {args.iterations}; python {platform.python_version()}\n"
    )
    print("| case | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(names))
    for label in labels:
        cells = []
        for n in names:
            v = results[n].get(label)
            best = BEST.get((n, label))
            if v is None:
                cells.append("-")
            elif label.startswith("list 100: ") or label == "load ms":
                cells.append(f"{v:.0f}")
            else:
                cells.append(f"{v:.1f}" + (f" ({best:.1f})" if best is not None else ""))
        print(f"| {label} | " + " | ".join(cells) + " |")
    print("\none condition, per-request context included (µs, median):\n")
    print("| engine | 1 arg | 30 args |")
    print("|---|---:|---:|")
    for n, c in conditions.items():
        print(f"| {n} | {c['1 arg']:.1f} | {c['30 args']:.1f} |")
    if "celpy" in results:
        print(f"| cel-python (pure Python), activation prebuilt | {results['celpy']['one condition']:.1f} | - |")
    for n, note in notes.items():
        print(f"{n}: {note}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "python": platform.python_version(),
                    "machine": platform.machine(),
                    "iterations": args.iterations,
                    "repeats": args.repeats,
                    "results": results,
                    "fastest": {f"{n}: {label}": v for (n, label), v in BEST.items()},
                    "one condition": conditions,
                    "notes": notes,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
