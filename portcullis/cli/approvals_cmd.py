"""``portcullis approvals list|show|approve|deny``: decide held calls through the gateway's admin API.

The CLI is a client of the admin API, so the same identity rules apply: the token (``--token``, ``--token-file`` or
``PORTCULLIS_TOKEN``) names the approver, whose groups must include one of the rule's approver groups, and who may
never approve their own call.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, NoReturn

import click


def _fail(msg: str, code: int = 2) -> NoReturn:
    click.echo(f"error: {msg}", err=True)
    sys.exit(code)


def _base(gateway: str | None, config_path: str | None) -> str:
    if gateway:
        return gateway.rstrip("/")
    if config_path:
        from portcullis.cli.main import _load

        cfg = _load(config_path)
        return (cfg.public_url or f"http://{cfg.listen}").rstrip("/")
    _fail("give --gateway URL or --config FILE")


def _token(token: str | None, token_file: str | None) -> str:
    if token:
        return token
    if token_file:
        return Path(token_file).read_text().strip()
    env = os.environ.get("PORTCULLIS_TOKEN")
    if env:
        return env.strip()
    _fail("give --token, --token-file or PORTCULLIS_TOKEN (a token from the gateway's identity provider)")


def _call(method: str, url: str, token: str, body: dict[str, Any] | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        try:
            msg = json.loads(exc.read()).get("message", exc.reason)
        except ValueError:
            msg = exc.reason
        _fail(f"HTTP {exc.code}: {msg}", 1)
    except urllib.error.URLError as exc:
        _fail(f"cannot reach {url}: {exc.reason}")


def _ts(ns: int | None) -> str:
    if ns is None:
        return "-"
    return dt.datetime.fromtimestamp(ns / 1e9, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


_common = [
    click.option("--gateway", help="the gateway's base URL (default: from --config)"),
    click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False)),
    click.option("--token", help="bearer token of the approver (or PORTCULLIS_TOKEN)"),
    click.option("--token-file", type=click.Path(exists=True, dir_okay=False)),
    click.option("--json", "as_json", is_flag=True, help="machine-readable output"),
]


def common(fn: Any) -> Any:
    for opt in reversed(_common):
        fn = opt(fn)
    return fn


@click.group("approvals")
def approvals_group() -> None:
    """Held calls waiting for someone else's approval."""


@approvals_group.command("list")
@click.option("--state", default="pending", show_default=True, help="pending, approved, denied, expired, released, all")
@common
def approvals_list(
    state: str, gateway: str | None, config_path: str | None, token: str | None, token_file: str | None, as_json: bool
) -> None:
    """Requests you asked for or may decide."""
    q = "" if state == "all" else f"?state={state}"
    out = _call("GET", f"{_base(gateway, config_path)}/admin/api/approvals{q}", _token(token, token_file))
    if as_json:
        click.echo(json.dumps(out, indent=2))
        return
    for a in out["approvals"]:
        click.echo(
            f"{a['id']}  {a['state']:<8} {_ts(a['created_ns'])}  {a['server']}  {a['method']} {a['target'] or ''}  "
            f"by {a['requester']}  rule {a['rule']}  approvers {','.join(a['approvers'])}"
        )


@approvals_group.command("show")
@click.argument("approval_id")
@common
def approvals_show(
    approval_id: str,
    gateway: str | None,
    config_path: str | None,
    token: str | None,
    token_file: str | None,
    as_json: bool,
) -> None:
    """One request with its votes."""
    a = _call("GET", f"{_base(gateway, config_path)}/admin/api/approvals/{approval_id}", _token(token, token_file))
    if as_json:
        click.echo(json.dumps(a, indent=2))
        return
    click.echo(f"{a['id']}  {a['state']}  {a['server']}  {a['method']} {a['target'] or ''}")
    click.echo(f"requested by {a['requester']} at {_ts(a['created_ns'])}, expires {_ts(a['expires_ns'])}")
    click.echo(f"rule {a['rule']} (policy {a['policy_version']}), approvers {', '.join(a['approvers'])}")
    click.echo(f"call digest {a['args_digest']}")
    if a.get("arguments") is not None:
        click.echo(f"call (masked) {json.dumps(a['arguments'], ensure_ascii=False)}")
    if a.get("justification"):
        click.echo(f"justification {a['justification']}")
    for v in a.get("votes", []):
        click.echo(f"  {_ts(v['ts_ns'])}  {v['vote']:<8} {v['voter']}" + (f": {v['reason']}" if v["reason"] else ""))


def _decide(decision: str) -> Any:
    @click.argument("approval_id")
    @click.option("--reason", default=None, help="why (recorded with the decision)")
    @click.option("--grant-minutes", type=int, default=None, help="approve: also grant calls like this one for N min")
    @click.option("--grant-arg", multiple=True, help="approve with a grant: NAME=GLOB an argument must match")
    @common
    def run(
        approval_id: str,
        reason: str | None,
        grant_minutes: int | None,
        grant_arg: tuple[str, ...],
        gateway: str | None,
        config_path: str | None,
        token: str | None,
        token_file: str | None,
        as_json: bool,
    ) -> None:
        url = f"{_base(gateway, config_path)}/admin/api/approvals/{approval_id}/{decision}"
        body: dict[str, Any] = {"reason": reason or ""}
        if grant_minutes is not None or grant_arg:
            if decision != "approve" or grant_minutes is None:
                _fail("--grant-minutes (and --grant-arg) go with approve")
            pairs = [a.split("=", 1) for a in grant_arg]
            if any(len(p) != 2 for p in pairs):
                _fail("--grant-arg takes NAME=GLOB")
            body["grant"] = {"minutes": grant_minutes, "arguments": {k: v for k, v in pairs} if pairs else None}
        a = _call("POST", url, _token(token, token_file), body)
        if as_json:
            click.echo(json.dumps(a, indent=2))
        else:
            click.echo(f"{a['id']}: {a['state']}")

    run.__doc__ = (
        "Review a call that went through by break-glass (approvers only, not its requester)."
        if decision == "review"
        else f"{decision.capitalize()} a held call (you must be an approver, and not its requester)."
    )
    return run


approvals_group.command("approve")(_decide("approve"))
approvals_group.command("deny")(_decide("deny"))
approvals_group.command("review")(_decide("review"))
