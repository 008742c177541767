"""``portcullis audit search``: find records by who, where, what, when and free text (masked payloads only)."""

from __future__ import annotations

import json
import sys
from typing import Any

import click


def when(text: str | None) -> int | None:
    from portcullis.audit.search import parse_when

    try:
        return parse_when(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command("search")
@click.option("--config", "config_path", type=click.Path(dir_okay=False))
@click.option("--store", help="store URL (instead of --config)")
@click.option("--principal", help="a subject, client id or e-mail (exactly; the e-mail in any case)")
@click.option("--group")
@click.option("--server")
@click.option("--tool", help="tools/call requests for this tool")
@click.option("--method")
@click.option("--decision", type=click.Choice(["allow", "deny", "hold"]))
@click.option("--kind", help="record kind: request, result, error, notification, or an event (session_open, …)")
@click.option("--session")
@click.option("--since", help="from (inclusive): RFC 3339, a duration back from now (15m, 2h, 7d) or ns")
@click.option("--until", help="before (exclusive): RFC 3339, a duration back from now or ns")
@click.option("--text", help="text in the masked payload or the detail (case-insensitive for ASCII letters)")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 1000))
@click.option("--cursor", type=int, help="the next page: the cursor the previous page printed")
@click.option("--responses", is_flag=True, help="each request with its response (JSON: under 'response')")
@click.option("--width", default=60, show_default=True, type=click.IntRange(0), help="payload characters shown")
@click.option("--json", "as_json", is_flag=True, help="one JSON object per line (the exported record form)")
def search(
    config_path: str | None,
    store: str | None,
    principal: str | None,
    group: str | None,
    server: str | None,
    tool: str | None,
    method: str | None,
    decision: str | None,
    kind: str | None,
    session: str | None,
    since: str | None,
    until: str | None,
    text: str | None,
    limit: int,
    cursor: int | None,
    responses: bool,
    width: int,
    as_json: bool,
) -> None:
    """Search the audit trail, newest first. Only masked payloads are searched and shown."""
    from portcullis.audit.search import Query
    from portcullis.audit.search import search as run
    from portcullis.cli.audit_cmd import _read_only
    from portcullis.cli.main import _load

    url = store or (_load(config_path).store if config_path else None)
    if url is None:
        click.echo("error: give --config FILE or --store URL", err=True)
        sys.exit(2)
    try:
        q = Query(
            principal=principal,
            group=group,
            server=server,
            tool=tool,
            method=method,
            decision=decision,
            kind=kind,
            session=session,
            since_ns=when(since),
            until_ns=when(until),
            text=text,
            limit=limit,
            cursor=cursor,
            responses=responses,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    rows, nxt = run(_read_only(url), q)
    if as_json:
        for r in rows:
            click.echo(json.dumps(r, ensure_ascii=False))
    else:
        click.echo(
            f"{'TIME':24} {'SEQ':>7} {'SERVER':12} {'SESSION':10} {'WHO':18} DIR {'METHOD/TOOL':24} "
            f"{'DECISION':16} {'OUTCOME':10} PAYLOAD"
        )
        for r in rows:
            click.echo(_line(r, width))
            if r.get("response") is not None:
                click.echo(_line(r["response"], width))
    if nxt is not None:
        click.echo(f"more: --cursor {nxt}", err=True)


def _line(r: dict[str, Any], width: int) -> str:
    from portcullis.cli.main import _ts

    payload = (r.get("payload") or r.get("detail") or "").replace("\n", " ")
    decided = f"{r['decision']}:{r['rule'] or '-'}" if r["decision"] else "-"
    return (
        f"{_ts(r['ts_ns']):24} {r['seq']:>7} {_cut(r['server'], 12):12} {_cut(r['session_id'] or '-', 10):10} "
        f"{_cut(_who(r['principal']), 18):18} {r['direction']:3} {_cut(_what(r), 24):24} {_cut(decided, 16):16} "
        f"{_cut(r['outcome'] or '-', 10):10} {payload[:width]}"
    )


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _who(principal: str | None) -> str:
    if not principal:
        return "-"
    try:
        p = json.loads(principal)
    except ValueError:
        return principal
    return str(p.get("email") or p.get("sub") or "-") if isinstance(p, dict) else principal


def _what(r: dict[str, Any]) -> str:
    """The method, with the tool's name for a tools/call request."""
    what = r["method"] or r["kind"]
    if r["method"] == "tools/call" and r["kind"] == "request" and r.get("payload"):
        try:
            params = json.loads(r["payload"]).get("params")
        except (ValueError, AttributeError):
            return str(what)
        if isinstance(params, dict) and isinstance(params.get("name"), str):
            return f"tools/call {params['name']}"
    return str(what)
