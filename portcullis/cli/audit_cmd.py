"""``portcullis audit keygen|verify``: keys for signed checkpoints, and checking the trail."""

from __future__ import annotations

import json
import sys

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
    truncated tail, a bad signature); 2: it could not be read.
    """
    from portcullis.cli.main import _engine
    from portcullis.store.audit_keys import load_verifier
    from portcullis.store.verify import verify

    try:
        key = load_verifier(public_key) if public_key else None
    except ValueError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    v = verify(_engine(config_path, store), key)
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
    sys.exit(0 if v.ok else 1)
