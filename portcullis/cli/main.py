"""``portcullis``: serve the gateway, check its config, read its records."""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from pathlib import Path
from typing import Any

import click

from portcullis import __version__
from portcullis.config import Config, load_config
from portcullis.errors import ConfigError
from portcullis.store.db import SchemaError, current_revision, head_revision, make_engine, upgrade


def _load(path: str) -> Config:
    try:
        return load_config(path)
    except ConfigError as exc:
        for p in exc.problems:
            click.echo(f"error: {p}", err=True)
        sys.exit(2)


@click.group()
@click.version_option(__version__, prog_name="portcullis")
def cli() -> None:
    """Portcullis: an identity-aware, MCP-native access gateway."""


@cli.command()
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False), help="YAML config file")
@click.option("--log-level", default="info", type=click.Choice(["debug", "info", "warning", "error"]))
@click.option(
    "--log-format",
    default="text",
    envvar="PORTCULLIS_LOG_FORMAT",
    type=click.Choice(["text", "json"]),
    help="json: one object per line with the request's server, session id and trace id",
)
def serve(config_path: str, log_level: str, log_format: str) -> None:
    """Run the gateway."""
    from portcullis.observe.logs import setup

    setup(log_level, log_format)
    config = _load(config_path)
    if config.auth.mode == "none":
        logging.getLogger("portcullis").warning(
            "!!! auth mode 'none': every request is accepted WITHOUT authentication. "
            "This is for local development on a loopback address only. !!!"
        )
    from portcullis.policy import PolicyError
    from portcullis.server.app import run

    try:
        run(config)
    except (PolicyError, ConfigError) as exc:  # also what only shows at start: a secret's variable unset
        for p in exc.problems:
            click.echo(f"error: {p}", err=True)
        sys.exit(2)
    except SchemaError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(3)
    except OSError as exc:
        click.echo(f"error: cannot listen on {config.listen}: {exc.strerror or exc}", err=True)
        sys.exit(4)


@cli.group("config")
def config_group() -> None:
    """Work with configuration files."""


@config_group.command("check")
@click.argument("path", type=click.Path(dir_okay=False))
def config_check(path: str) -> None:
    """Validate a config file; print each problem as FILE:LINE:COL: KEY: what was expected."""
    config = _load(path)
    kinds = ", ".join(f"{n} ({s.kind})" for n, s in config.servers.items()) or "no servers"
    click.echo(f"{path}: OK: listen {config.listen}, store {config.store.split(':', 1)[0]}, {kinds}")


@cli.group("db")
def db_group() -> None:
    """Store schema."""


@db_group.command("upgrade")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False))
def db_upgrade(config_path: str) -> None:
    """Create or migrate the store's schema to this version."""
    config = _load(config_path)
    engine = make_engine(config.store)
    before = current_revision(engine)
    upgrade(engine)
    click.echo(f"schema: {before or '(empty)'} -> {head_revision()}")


@cli.command()
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False))
@click.option("--user", required=True, help="the subject (sub) of the token")
@click.option("--groups", default="", help="comma-separated group names")
@click.option("--email", default=None)
@click.option("--server", default=None, help="mint for one server's endpoint (default: the whole gateway)")
@click.option("--url", "base_url", default=None, help="the gateway's base URL (default: public_url or http://LISTEN)")
@click.option("--ttl", type=int, default=None, help="lifetime in seconds (default: auth.dev_issuer.token_ttl)")
def token(
    config_path: str,
    user: str,
    groups: str,
    email: str | None,
    server: str | None,
    base_url: str | None,
    ttl: int | None,
) -> None:
    """Print a development token from the gateway's own dev issuer (auth.dev_issuer.enabled)."""
    from portcullis.identity.dev_issuer import dev_issuer_url, load_or_create_key, mint

    config = _load(config_path)
    dev = config.auth.dev_issuer
    if config.auth.mode != "oidc" or not dev.enabled:
        click.echo("error: the dev issuer is off; set auth.mode: oidc and auth.dev_issuer.enabled: true", err=True)
        sys.exit(2)
    if server is not None and server not in config.servers:
        click.echo(f"error: no server named {server!r} in {config_path}", err=True)
        sys.exit(2)
    base = (base_url or config.public_url or f"http://{config.listen}").rstrip("/")
    if base_url is None and config.public_url is None and config.port == 0:
        click.echo("error: the gateway listens on port 0; give --url with the real address", err=True)
        sys.exit(2)
    audience = f"{base}/mcp/{server}" if server else base
    key = load_or_create_key(dev.key_file)
    group_list = [g for g in (x.strip() for x in groups.split(",")) if g]
    click.echo(mint(key, dev_issuer_url(base), audience, user, group_list, email, ttl or dev.token_ttl))


@cli.group("apikeys")
def apikeys_group() -> None:
    """API keys for automated agents (stored only as hashes)."""


def _db(config_path: str) -> Any:
    from portcullis.store.db import ensure_schema

    config = _load(config_path)
    engine = make_engine(config.store)
    try:
        ensure_schema(engine, auto_create=config.store.startswith("sqlite"))
    except SchemaError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(3)
    return engine


@apikeys_group.command("create")
@click.argument("name")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False))
@click.option("--owner", required=True, help="the person or team answerable for the key")
@click.option("--groups", default="", help="comma-separated groups the key acts with")
@click.option("--ttl", default=None, type=int, help="lifetime in seconds (default: no expiry)")
def apikeys_create(name: str, config_path: str, owner: str, groups: str, ttl: int | None) -> None:
    """Create a key; it is printed once and never stored."""
    from portcullis.store import apikeys

    group_list = [g for g in (x.strip() for x in groups.split(",")) if g]
    key, token = apikeys.create(_db(config_path), name, owner, group_list, ttl)
    click.echo(f"created API key {key.id} ({name}) for {owner}; groups {', '.join(group_list) or '-'}", err=True)
    click.echo(token)


@apikeys_group.command("list")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False))
def apikeys_list(config_path: str) -> None:
    """List keys (never their secrets)."""
    from portcullis.store import apikeys

    click.echo(f"{'ID':14} {'NAME':20} {'OWNER':24} {'GROUPS':24} {'CREATED':24} STATE")
    for k in sorted(apikeys.load_all(_db(config_path)).values(), key=lambda k: k.created_ns):
        state = "revoked" if k.revoked_ns else ("expired" if not k.usable() else "active")
        click.echo(
            f"{k.id:14} {k.name[:20]:20} {k.owner[:24]:24} {','.join(k.groups)[:24]:24} {_ts(k.created_ns):24} {state}"
        )


@apikeys_group.command("revoke")
@click.argument("key_id")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False))
def apikeys_revoke(key_id: str, config_path: str) -> None:
    """Revoke a key by its id; gateways refuse it within auth.api_key_refresh seconds."""
    from portcullis.store import apikeys

    if not apikeys.revoke(_db(config_path), key_id):
        click.echo(f"error: no active API key {key_id!r}", err=True)
        sys.exit(1)
    click.echo(f"revoked {key_id}")


@cli.group("sessions")
def sessions_group() -> None:
    """Recorded sessions."""


def _engine(config_path: str | None, store: str | None) -> Any:
    if store is None:
        if config_path is None:
            click.echo("error: give --config FILE or --store URL", err=True)
            sys.exit(2)
        store = _load(config_path).store
    return make_engine(store)


def _ts(ns: int | None) -> str:
    if ns is None:
        return "-"
    return dt.datetime.fromtimestamp(ns / 1e9, dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


@sessions_group.command("list")
@click.option("--config", "config_path", type=click.Path(dir_okay=False))
@click.option("--store", help="store URL (instead of --config)")
@click.option("--limit", default=50, show_default=True)
@click.option("--server")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def sessions_list(config_path: str | None, store: str | None, limit: int, server: str | None, as_json: bool) -> None:
    """List recorded sessions, newest first."""
    from portcullis.store.queries import list_sessions

    engine = _engine(config_path, store)
    try:
        rows = list_sessions(engine, limit, server)
    finally:
        engine.dispose()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(f"{'SESSION':34} {'SERVER':16} {'PROTOCOL':11} {'CLIENT':24} {'STARTED':24} {'RECORDS':>7}  ENDED")
    for r in rows:
        client = "-"
        if r["client_info"]:
            with_ci = json.loads(r["client_info"])
            client = f"{with_ci.get('name', '?')} {with_ci.get('version', '')}".strip()
        click.echo(
            f"{r['id']:34} {r['server'][:16]:16} {r['protocol_version'] or '-':11} {client[:24]:24} "
            f"{_ts(r['created_ns']):24} {r['records']:>7}  {r['end_reason'] or '-'}"
        )


ARROWS = {"c2s": "→", "s2c": "←", "gw": "•"}


@sessions_group.command("show")
@click.argument("session_id")
@click.option("--config", "config_path", type=click.Path(dir_okay=False))
@click.option("--store", help="store URL (instead of --config)")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.option("--width", default=160, show_default=True, help="truncate payloads to this many characters")
def sessions_show(session_id: str, config_path: str | None, store: str | None, as_json: bool, width: int) -> None:
    """Show one session as a timeline."""
    from portcullis.store.queries import get_session, session_records

    engine = _engine(config_path, store)
    try:
        s = get_session(engine, session_id)
        recs = session_records(engine, session_id)
    finally:
        engine.dispose()
    if s is None and not recs:
        click.echo(f"error: no session {session_id!r}", err=True)
        sys.exit(1)
    if as_json:
        out = {
            "session": s,
            "records": [
                {
                    **r,
                    "masked": None if r["masked"] is None else json.loads(r["masked"]),
                    "sealed": r["sealed"] is not None,  # opened only with the forensic key: portcullis forensic open
                    "prev_hash": None if r["prev_hash"] is None else bytes(r["prev_hash"]).hex(),
                    "hash": None if r["hash"] is None else bytes(r["hash"]).hex(),
                    "payload": None
                    if r["payload"] is None
                    else json.loads(r["payload"])
                    if _is_json(r["payload"])
                    else r["payload"].decode("utf-8", "replace"),
                }
                for r in recs
            ],
        }
        click.echo(json.dumps(out, indent=2))
        return
    if s is not None:
        click.echo(f"session {s['id']}  server {s['server']}  protocol {s['protocol_version']}  era {s['era']}")
        if s["client_info"]:
            click.echo(f"client  {s['client_info']}")
        click.echo(f"started {_ts(s['created_ns'])}  ended {_ts(s['ended_ns'])} ({s['end_reason'] or 'open'})")
    for r in recs:
        lat = f"{r['latency_us'] / 1000:.1f}ms" if r["latency_us"] is not None else ""
        payload = (r["payload"] or b"").decode("utf-8", "replace")
        if r["detail"] and r["direction"] == "gw":
            payload = r["detail"]
        line = (
            f"{_ts(r['ts_ns'])} #{r['seq']:<6} {ARROWS.get(r['direction'], '?')} {r['kind']:<14} "
            f"{r['method'] or '':<28} id={r['msg_id'] or '-':<6} {r['outcome'] or '':<15} {lat:>8}  "
        )
        click.echo(line + payload[:width])
        if r["masked"]:
            masked = ", ".join(f"{m['class']}@{m['path']}" for m in json.loads(r["masked"]))
            click.echo(f"{'':>36}masked: {masked}" + ("  (original sealed)" if r["sealed"] else ""))


def _export(config_path: str | None, store: str | None, session_id: str) -> dict[str, Any]:
    from portcullis.audit.document import export_session

    engine = _engine(config_path, store)
    try:
        return export_session(engine, session_id)
    finally:
        engine.dispose()


@sessions_group.command("export")
@click.argument("session_id")
@click.option("--config", "config_path", type=click.Path(dir_okay=False))
@click.option("--store", help="store URL (instead of --config)")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="file to write (default: stdout)")
def sessions_export(session_id: str, config_path: str | None, store: str | None, output: str | None) -> None:
    """Write a session as a self-contained, versioned JSON document (sessions replay --file reads it)."""
    try:
        doc = _export(config_path, store, session_id)
    except LookupError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    text = json.dumps(doc, indent=2, ensure_ascii=False)
    if output:
        Path(output).write_text(text + "\n", encoding="utf-8")
        click.echo(f"wrote {output}: session {session_id}, {len(doc['records'])} records", err=True)
    else:
        click.echo(text)


@sessions_group.command("replay")
@click.argument("session_id", required=False)
@click.option("--config", "config_path", type=click.Path(dir_okay=False))
@click.option("--store", help="store URL (instead of --config)")
@click.option("--file", "doc_file", type=click.Path(dir_okay=False), help="a document from sessions export")
@click.option("--against", metavar="URL", help="re-run the session's requests against this MCP endpoint")
@click.option("--force", is_flag=True, help="with --against: also replay requests that are not read-only")
@click.option("--header", "headers", multiple=True, metavar="'NAME: VALUE'", help="with --against: sent every time")
@click.option("--timeout", default=30.0, show_default=True, help="with --against: seconds per request")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def sessions_replay(
    session_id: str | None,
    config_path: str | None,
    store: str | None,
    doc_file: str | None,
    against: str | None,
    force: bool,
    headers: tuple[str, ...],
    timeout: float,
    as_json: bool,
) -> None:
    """A session as a timeline; with --against URL, what a server answers differently today.

    Reads the session from the store (SESSION_ID with --config or --store) or from an exported document (--file).
    Exit status: 0 no differences (or the timeline of an intact document), 1 differences (or records that fail
    their integrity check), 2 an unreadable document, an unknown version, a server that cannot be reached, or
    requests that could not be compared."""
    import asyncio

    from portcullis.audit.document import DocumentError, load_document
    from portcullis.audit.replay import ReplayError, render, replay_against, timeline_json

    if (doc_file is None) == (session_id is None):
        click.echo("error: give a SESSION_ID (with --config/--store) or --file DOC.json, not both", err=True)
        sys.exit(2)
    extra: dict[str, str] = {}
    for h in headers:
        name, sep, value = h.partition(":")
        if not sep or not name.strip():
            click.echo(f"error: --header wants 'Name: value', got {h!r}", err=True)
            sys.exit(2)
        extra[name.strip()] = value.strip()
    try:
        if doc_file is not None:
            data = json.loads(Path(doc_file).read_bytes())
        else:
            assert session_id is not None
            data = _export(config_path, store, session_id)
        doc = load_document(data)
    except (DocumentError, LookupError, ValueError, OSError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    if against is None:
        if as_json:
            click.echo(json.dumps(timeline_json(doc), indent=2, ensure_ascii=False))
        else:
            click.echo("\n".join(render(doc)))
        sys.exit(1 if doc.problems else 0)
    for problem in doc.problems:
        click.echo(f"warning: integrity: {problem}", err=True)
    try:
        report = asyncio.run(replay_against(doc, against, force, extra, timeout))
    except ReplayError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2, ensure_ascii=False))
    else:
        click.echo("\n".join(report.lines()))
    sys.exit(report.exit_code or (1 if doc.problems else 0))


def _is_json(b: bytes) -> bool:
    try:
        json.loads(b)
    except ValueError:
        return False
    return True


def main() -> None:
    cli(prog_name="portcullis")


def _register() -> None:
    from portcullis.cli.agents_cmd import agent, agents_group
    from portcullis.cli.approvals_cmd import approvals_group
    from portcullis.cli.audit_cmd import audit_group
    from portcullis.cli.audit_search import search as audit_search
    from portcullis.cli.definitions_cmd import definitions_group
    from portcullis.cli.mask_cmd import forensic_group, mask
    from portcullis.cli.policy_cmd import policy_group

    cli.add_command(policy_group, "policy")
    cli.add_command(mask, "mask")
    cli.add_command(approvals_group, "approvals")
    cli.add_command(agent, "agent")
    cli.add_command(agents_group, "agents")
    cli.add_command(definitions_group, "definitions")
    cli.add_command(audit_group, "audit")
    audit_group.add_command(audit_search, "search")
    cli.add_command(forensic_group, "forensic")
    __import__("portcullis.cli.connect", fromlist=["register"]).register(cli)  # login, connect


_register()


if __name__ == "__main__":
    main()
