"""``portcullis audit search``: find records by who, where, what, when and free text (masked payloads only)."""

from __future__ import annotations

import json
import sys

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
@click.option("--principal", help="a subject or an e-mail, exactly")
@click.option("--group")
@click.option("--server")
@click.option("--tool", help="tools/call requests for this tool")
@click.option("--method")
@click.option("--decision", type=click.Choice(["allow", "deny", "hold"]))
@click.option("--kind", help="record kind: request, result, error, notification, or an event (session_open, …)")
@click.option("--session")
@click.option("--since", help="RFC 3339 or a duration back from now (15m, 2h, 7d)")
@click.option("--until", help="RFC 3339 or a duration back from now")
@click.option("--text", help="case-insensitive text in the masked payload or the detail")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 1000))
@click.option("--cursor", type=int, help="the next page: the cursor the previous page printed")
@click.option("--json", "as_json", is_flag=True, help="one JSON object per line")
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
    as_json: bool,
) -> None:
    """Search the audit trail, newest first. Only masked payloads are searched and shown."""
    from portcullis.audit.search import Query
    from portcullis.audit.search import search as run
    from portcullis.cli.audit_cmd import _read_only
    from portcullis.cli.main import _load, _ts

    url = store or (_load(config_path).store if config_path else None)
    if url is None:
        click.echo("error: give --config FILE or --store URL", err=True)
        sys.exit(2)
    q = Query(
        principal, group, server, tool, method, decision, kind, session, when(since), when(until), text, limit, cursor
    )
    rows, nxt = run(_read_only(url), q)
    if as_json:
        for r in rows:
            click.echo(json.dumps(r))
    else:
        click.echo(
            f"{'TIME':24} {'SEQ':>7} {'SERVER':14} {'SESSION':12} {'WHO':18} DIR {'METHOD':20} DECISION   PAYLOAD"
        )
        for r in rows:
            who = "-"
            if r["principal"]:
                p = json.loads(r["principal"])
                who = p.get("email") or p.get("sub") or "-"
            payload = (r.get("payload") or r.get("detail") or "").replace("\n", " ")
            decided = f"{r['decision']}:{r['rule']}" if r["decision"] else "-"
            click.echo(
                f"{_ts(r['ts_ns']):24} {r['seq']:>7} {r['server'][:14]:14} {(r['session_id'] or '-')[:12]:12} "
                f"{who[:18]:18} {r['direction']:3} {(r['method'] or r['kind'])[:20]:20} {decided[:10]:10} "
                f"{payload[:80]}"
            )
    if nxt is not None:
        click.echo(f"more: --cursor {nxt}", err=True)
