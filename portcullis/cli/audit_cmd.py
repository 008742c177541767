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
@click.option("--public-key", type=click.Path(exists=True, dir_okay=False), help="checks the checkpoint signatures")
@click.option("--json", "as_json", is_flag=True)
def audit_verify(config_path: str | None, store: str | None, public_key: str | None, as_json: bool) -> None:
    """Check the chain over every record and the signed checkpoints; name the first place it is broken.

    Exit status 0: the trail verifies; 1: it does not (removed, inserted, re-ordered or altered records, a
    truncated tail, a missing checkpoint, a bad signature — or checkpoints exist and no --public-key checked them);
    2: it could not be read. SQLite stores are opened read-only.
    """
    from sqlalchemy.exc import SQLAlchemyError

    from portcullis.cli.main import _load
    from portcullis.store.audit_keys import load_verifier
    from portcullis.store.verify import verify

    try:
        key = load_verifier(public_key) if public_key else None
    except (ValueError, OSError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    url = store or (_load(config_path).store if config_path else None)
    if url is None:
        click.echo("error: give --config FILE or --store URL", err=True)
        sys.exit(2)
    try:
        v = verify(_read_only(url), key)
    except SQLAlchemyError as exc:
        click.echo(f"error: cannot read the store: {type(exc).__name__}: {str(exc).splitlines()[0]}", err=True)
        sys.exit(2)
    if as_json:
        out = {"ok": v.ok, "records": v.records, "unchained": v.unchained, "checkpoints": v.checkpoints}
        click.echo(json.dumps({**out, "unsealed": v.unsealed, "problems": v.problems}, indent=2))
    else:
        for p in v.problems:
            click.echo(f"FAIL {p}")
        signed = "signatures checked" if key is not None else "signatures NOT checked (no --public-key)"
        click.echo(
            f"{'OK' if v.ok else 'FAILED'}: {v.records} records, {v.checkpoints} checkpoints ({signed}), "
            f"{v.unsealed} after the newest checkpoint, {v.unchained} from before the chain"
        )
    if v.ok and v.checkpoints and key is None:
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
