"""``portcullis policy check`` and ``portcullis policy test``: validate a policy, try a request against it."""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn

import click

from portcullis.admin.permissions import explain_json
from portcullis.policy import (
    Explanation,
    PolicyEngine,
    PolicyError,
    PolicyRequest,
    PolicySet,
    Principal,
    load_policy,
)
from portcullis.policy.model import ITEM_NAME_KEY, LIST_METHODS

_MARK = {"match": "+", "maybe": "?", "error": "!", "no-match": "-"}


def _fail(msg: str) -> NoReturn:
    click.echo(f"error: {msg}", err=True)
    sys.exit(2)


def _load(path: str, as_json: bool) -> PolicySet:
    try:
        return load_policy(path)
    except PolicyError as exc:
        if as_json:
            click.echo(json.dumps({"ok": False, "file": path, "problems": exc.problems}, indent=2))
        else:
            for p in exc.problems:
                click.echo(f"error: {p}", err=True)
        sys.exit(2)


def _json_arg(text: str | None, name: str, want: type) -> Any:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError as exc:
        _fail(f"{name}: not valid JSON: {exc}")
    if not isinstance(value, want):
        _fail(f"{name}: expected a JSON {'object' if want is dict else 'array'}")
    return value


@click.group("policy")
def policy_group() -> None:
    """Access policies: validate a policy file, try a request against it."""


@policy_group.command("check")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def policy_check(path: str, as_json: bool) -> None:
    """Validate a policy file. Exit 0 if it loads; else print each problem as FILE:LINE:COL: WHERE: what was
    expected, and exit 2."""
    ps = _load(path, as_json)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "ok": True,
                    "file": path,
                    "version": ps.version,
                    "default": ps.default,
                    "rules": [r.id for r in ps.rules],
                    "defaults": [r.id for r in ps.defaults],
                },
                indent=2,
            )
        )
        return
    click.echo(f"{path}: OK: {ps.summary()}")


@policy_group.command("test")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--user", "subject", required=True, help="the principal's subject")
@click.option("--email", default=None, help="the principal's email")
@click.option("--groups", default="", help="comma-separated groups")
@click.option("--client", "client_id", default=None, help="the OAuth client id")
@click.option("--kind", default="user", show_default=True, help="the principal's kind")
@click.option("--server", required=True, help="the server name, as in the gateway config")
@click.option("--method", default="tools/call", show_default=True)
@click.option("--target", default=None, help="tool or prompt name, or resource URI")
@click.option("--args", "args_json", default=None, help="the call's arguments as a JSON object")
@click.option("--annotations", "annotations_json", default=None, help="the tool's annotations as a JSON object")
@click.option(
    "--items",
    "items_json",
    default=None,
    help="for a list method: the listed items as a JSON array (objects, or names/URIs); shows which are visible",
)
@click.option("--expect", type=click.Choice(["allow", "deny", "hold"]), help="exit 1 unless the decision is this")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def policy_test(
    path: str,
    subject: str,
    email: str | None,
    groups: str,
    client_id: str | None,
    kind: str,
    server: str,
    method: str,
    target: str | None,
    args_json: str | None,
    annotations_json: str | None,
    items_json: str | None,
    expect: str | None,
    as_json: bool,
) -> None:
    """Decide one request under a policy file and explain which rule decided and why."""
    ps = _load(path, as_json)
    engine = PolicyEngine(ps)
    arguments = _json_arg(args_json, "--args", dict) or {}
    annotations = _json_arg(annotations_json, "--annotations", dict)
    items = _json_arg(items_json, "--items", list)
    principal = Principal(
        subject=subject,
        email=email,
        groups=frozenset(g.strip() for g in groups.split(",") if g.strip()),
        client_id=client_id,
        kind=kind,
    )
    req = PolicyRequest(principal, server, method, target, arguments, annotations)
    ex = engine.explain(req)
    visible: list[Any] | None = None
    list_kind = LIST_METHODS.get(method)
    if items is not None:
        if list_kind is None:
            _fail(f"--items needs a list method ({', '.join(LIST_METHODS)}), not {method}")
        key = ITEM_NAME_KEY[list_kind]
        objs = [i if isinstance(i, dict) else {key: i} for i in items]
        visible = engine.visible(principal, server, list_kind, objs) if ex.decision.effect != "deny" else []
        hidden = [o for o in objs if o not in visible]
    if as_json:
        out: dict[str, Any] = explain_json(ex)
        if visible is not None:
            out["visible"] = visible
            out["hidden"] = hidden
        click.echo(json.dumps(out, indent=2))
    else:
        _print_explanation(ex, ps, req)
        if visible is not None:
            key = ITEM_NAME_KEY[list_kind] if list_kind else "name"
            click.echo("")
            click.echo(f"visible ({len(visible)}): {', '.join(str(v.get(key)) for v in visible) or '-'}")
            click.echo(f"hidden  ({len(hidden)}): {', '.join(str(h.get(key)) for h in hidden) or '-'}")
    if expect is not None and ex.decision.effect != expect:
        if not as_json:
            click.echo(f"\nexpected {expect}, got {ex.decision.effect}", err=True)
        sys.exit(1)


def _print_explanation(ex: Explanation, ps: PolicySet, req: PolicyRequest) -> None:
    d = ex.decision
    what = f"{req.method} {req.server}" + (f"/{req.target}" if req.target else "")
    click.echo(f"request:  {req.principal.subject} {sorted(req.principal.groups)} -> {what}")
    click.echo(f"decision: {d.effect}")
    if d.rule is not None:
        rule = next((r for r in ps.all_rules() if r.id == d.rule), None)
        where = f" ({rule.tier}, {ps.source}:{rule.line})" if rule is not None else ""
        click.echo(f"rule:     {d.rule}{where}")
    else:
        click.echo(f"rule:     (none: the policy default, {ps.default})")
    click.echo(f"reason:   {d.reason}")
    if d.approvers:
        click.echo(f"approvers: {', '.join(d.approvers)}")
    click.echo(f"policy:   {d.policy_version}")
    click.echo("")
    click.echo("precedence: deny > hold > allow within a tier; `defaults` only when no rule of `rules` applies")
    width = max((len(t.rule) for t in ex.trace), default=4)
    tier = None
    for t in ex.trace:
        if t.tier != tier:
            tier = t.tier
            note = "" if t.consulted else "  (not consulted: a rule above applied)"
            click.echo(f"{tier}:{note}")
        marker = "=>" if t.rule == d.rule else " " + _MARK[t.status]
        click.echo(f"  {marker} {t.effect:<5} {t.rule:<{width}}  line {t.line:<4} {t.status:<8} {t.detail}")
    click.echo("legend: => decided, + applies, ? could apply, ! condition error, - does not apply")
