"""``portcullis definitions list|accept``: the tool, prompt and resource definitions pinned per server."""

from __future__ import annotations

import getpass
import json
import sys

import click


@click.group("definitions")
def definitions_group() -> None:
    """Pinned tool, prompt and resource definitions (rug-pull and tool-poisoning detection)."""


@definitions_group.command("list")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False))
@click.option("--changed", is_flag=True, help="only those that differ from what was accepted, or look poisoned")
@click.option("--json", "as_json", is_flag=True)
def definitions_list(config_path: str, changed: bool, as_json: bool) -> None:
    """Every definition seen, with its accepted and newest fingerprints."""
    from portcullis.cli.main import _db, _ts
    from portcullis.store.definitions import load_rows

    rows = sorted(load_rows(_db(config_path)), key=lambda r: (r["server"], r["kind"], r["name"]))
    if changed:
        rows = [r for r in rows if r["changed_ns"] is not None]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(f"{'SERVER':16} {'KIND':9} {'NAME':28} {'ACCEPTED':17} {'SEEN':17} {'SINCE':24} STATE")
    for r in rows:
        state = "ok"
        if r["changed_ns"] is not None:
            findings = json.loads(r["findings"]) if r["findings"] else []
            state = ("suspicious: " + ", ".join(findings)) if findings else "CHANGED"
        click.echo(
            f"{r['server'][:16]:16} {r['kind'][:9]:9} {r['name'][:28]:28} {r['accepted_digest'][:16] or '-':17} "
            f"{r['seen_digest'][:16]:17} {_ts(r['changed_ns'] or r['first_seen_ns']):24} {state}"
        )


@definitions_group.command("show")
@click.argument("server")
@click.argument("kind", type=click.Choice(["tool", "prompt", "resource", "resource_template"]))
@click.argument("name")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False))
def definitions_show(server: str, kind: str, name: str, config_path: str) -> None:
    """The accepted and the newest definition, to review before accepting."""
    from portcullis.cli.main import _db
    from portcullis.store.definitions import load_rows

    for r in load_rows(_db(config_path)):
        if (r["server"], r["kind"], r["name"]) == (server, kind, name):
            click.echo(f"accepted ({r['accepted_digest'] or 'nothing'}):\n{r['accepted'] or '-'}\n")
            click.echo(f"seen ({r['seen_digest']}):\n{r['seen']}")
            return
    click.echo(f"error: no {kind} {name!r} seen on {server!r}", err=True)
    sys.exit(1)


@definitions_group.command("accept")
@click.argument("server")
@click.argument("kind", type=click.Choice(["tool", "prompt", "resource", "resource_template"]))
@click.argument("name")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False))
@click.option("--digest", default=None, help="accept only if the newest definition still has this fingerprint")
@click.option("--by", default=None, help="who accepts (recorded; default: the OS user)")
def definitions_accept(server: str, kind: str, name: str, config_path: str, digest: str | None, by: str | None) -> None:
    """Trust the definition the server announces now; gateways take it up within definitions.refresh seconds."""
    from portcullis.cli.main import _db
    from portcullis.store.definitions import accept

    try:
        row = accept(_db(config_path), server, kind, name, by or getpass.getuser(), digest)
    except LookupError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except ValueError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    click.echo(f"accepted {server} {kind} {name!r}: {row['accepted_digest']}")
