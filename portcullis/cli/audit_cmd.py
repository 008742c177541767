"""``portcullis audit keygen|verify``: keys for signed checkpoints, and checking the trail."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click


@click.group("audit")
def audit_group() -> None:
    """The audit trail: a hash chain over every record, sealed by signed checkpoints."""


@audit_group.command("keygen")
@click.option(
    "--private", "private_path", required=True, type=click.Path(dir_okay=False), help="recording.signing_key_file"
)
@click.option("--public", "public_path", required=True, type=click.Path(dir_okay=False), help="for verifiers")
def audit_keygen(private_path: str, public_path: str) -> None:
    """Make an Ed25519 key pair: the gateway signs checkpoints with the private half; publish the public half."""
    from portcullis.cli.keyfiles import write_key_pair
    from portcullis.store.audit_keys import keygen

    write_key_pair(private_path, public_path, *keygen())
    click.echo(f"private key: {private_path}\npublic key:  {public_path}")


@audit_group.command("verify")
@click.option("--config", "config_path", type=click.Path(dir_okay=False))
@click.option("--store", help="store URL (instead of --config)")
@click.option(
    "--file",
    "files",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="an exported JSON-lines file instead of the store (repeat, oldest first: audit.jsonl.2 audit.jsonl.1 …)",
)
@click.option("--public-key", type=click.Path(exists=True, dir_okay=False), help="checks the checkpoint signatures")
@click.option("--json", "as_json", is_flag=True)
def audit_verify(
    config_path: str | None, store: str | None, files: tuple[str, ...], public_key: str | None, as_json: bool
) -> None:
    """Check the chain over every record and the signed checkpoints; name the first place it is broken.

    Exit status 0: the trail verifies; 1: it does not (removed, inserted, re-ordered or altered records, a
    truncated tail, a missing checkpoint, a bad signature — or checkpoints exist and no --public-key checked them);
    2: it could not be read. SQLite stores are opened read-only.
    """
    from sqlalchemy.exc import SQLAlchemyError

    from portcullis.cli.main import _load
    from portcullis.store.audit_keys import load_verifier
    from portcullis.store.verify import verify, verify_files

    try:
        key = load_verifier(public_key) if public_key else None
    except (ValueError, OSError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    if files:
        try:
            v = verify_files(files, key)
        except (ValueError, OSError) as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)
        _report(v, key is not None, as_json)
        return
    url = store or (_load(config_path).store if config_path else None)
    if url is None:
        click.echo("error: give --config FILE, --store URL or --file EXPORT.jsonl", err=True)
        sys.exit(2)
    try:
        v = verify(_read_only(url), key)
    except SQLAlchemyError as exc:
        click.echo(f"error: cannot read the store: {type(exc).__name__}: {str(exc).splitlines()[0]}", err=True)
        sys.exit(2)
    _report(v, key is not None, as_json)


def _report(v: Any, signed_checked: bool, as_json: bool) -> None:
    if as_json:
        out = {"ok": v.ok, "records": v.records, "unchained": v.unchained, "checkpoints": v.checkpoints}
        out |= {"pruned": v.pruned}
        click.echo(json.dumps({**out, "unsealed": v.unsealed, "problems": v.problems}, indent=2))
    else:
        for p in v.problems:
            click.echo(f"FAIL {p}")
        signed = "signatures checked" if signed_checked else "signatures NOT checked (no --public-key)"
        pruned = "".join(f", chain {c} pruned through seq {s}" for c, s in sorted(v.pruned.items()))
        click.echo(
            f"{'OK' if v.ok else 'FAILED'}: {v.records} records, {v.checkpoints} checkpoints ({signed}), "
            f"{v.unsealed} after the newest checkpoint, {v.unchained} from before the chain{pruned}"
        )
    if v.ok and v.checkpoints and not signed_checked:
        click.echo("error: the checkpoints' signatures were not checked: give --public-key", err=True)
        sys.exit(1)
    sys.exit(0 if v.ok else 1)


def _read_only(url: str) -> Any:
    """The store as evidence: SQLite opened read-only (no file created, no WAL switched on), others as they are."""
    from sqlalchemy import create_engine

    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///") :]
        if not Path(path).is_file():
            click.echo(f"error: no store at {path}", err=True)
            sys.exit(2)
        return create_engine(f"sqlite:///file:{path}?mode=ro&uri=true")
    from portcullis.store.db import make_engine

    return make_engine(url)


def parse_duration(text: str) -> float:
    from portcullis.config.model import parse_duration as parse

    try:
        return parse(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@audit_group.command("prune")
@click.option("--config", "config_path", type=click.Path(dir_okay=False))
@click.option("--store", help="store URL (instead of --config)")
@click.option("--older-than", "older_than", help="prune records older than this (90d, 12h, …)")
@click.option("--max-bytes", type=click.IntRange(min=1), help="prune the oldest until payloads fit in this many bytes")
@click.option("--dry-run", is_flag=True, help="say where each chain would be cut; change nothing")
def audit_prune(
    config_path: str | None, store: str | None, older_than: str | None, max_bytes: int | None, dry_run: bool
) -> None:
    """Delete old records up to a signed checkpoint per chain (the chain stays verifiable; the prune is recorded).

    Without --older-than/--max-bytes the config's recording.retention applies."""
    from portcullis.cli.main import _load
    from portcullis.store.db import make_engine
    from portcullis.store.retention import cutoff, plan, prune

    cfg = _load(config_path) if config_path else None
    url = store or (cfg.store if cfg else None)
    if url is None:
        click.echo("error: give --config FILE or --store URL", err=True)
        sys.exit(2)
    age = parse_duration(older_than) if older_than else None
    if age is None and max_bytes is None and cfg is not None and cfg.recording.retention is not None:
        age, max_bytes = cfg.recording.retention.max_age, cfg.recording.retention.max_bytes
    if age is None and max_bytes is None:
        click.echo("error: give --older-than or --max-bytes (or recording.retention in the config)", err=True)
        sys.exit(2)
    engine = make_engine(url)
    if dry_run:
        cuts = plan(engine, before_ns=cutoff(age), max_bytes=max_bytes)
        for c in cuts:
            click.echo(f"would prune chain {c.chain} through seq {c.through_seq} (checkpoint #{c.checkpoint})")
        if not cuts:
            click.echo("nothing to prune (records are pruned only up to a signed checkpoint)")
        return
    click.echo(prune(engine, before_ns=cutoff(age), max_bytes=max_bytes).summary())
