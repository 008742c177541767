"""``portcullis mask FILE``: what the configured rules would mask; ``portcullis forensic``: sealed originals."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, NoReturn

import click
import orjson

from portcullis.config.model import MaskingConfig


def _fail(msg: str) -> NoReturn:
    click.echo(f"error: {msg}", err=True)
    sys.exit(2)


def _masking(config_path: str | None) -> MaskingConfig:
    if config_path is None:
        return MaskingConfig()
    from portcullis.cli.main import _load

    return _load(config_path).masking


def _line_col(text: str, offset: int) -> tuple[int, int]:
    line = text.count("\n", 0, offset) + 1
    return line, offset - (text.rfind("\n", 0, offset) + 1) + 1


def _hint(value: str) -> str:
    """Enough of a finding to recognise it in the file without printing the secret itself."""
    if len(value) <= 12:
        return "*" * len(value)
    return f"{value[:2]}… ({len(value)} chars)"


@click.command()
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False), help="use this config's rules")
@click.option("--server", default="", help="apply the choices for this server")
@click.option("--groups", default="", help="comma-separated groups of the caller (unmasked_for, overrides)")
@click.option("--message", is_flag=True, help="FILE is a JSON-RPC message: walk it as the gateway does")
@click.option("--json", "as_json", is_flag=True, help="print the findings as JSON instead of the masked text")
def mask(file: str, config_path: str | None, server: str, groups: str, message: bool, as_json: bool) -> None:
    """Apply the configured masking rules to FILE ('-' for stdin) and show what would be masked.

    Prints the masked text on stdout and one line per finding on stderr (class, line:column, a hint that is never
    the secret). Exit status 0 when nothing was found, 1 when something was masked, 2 on an error.
    """
    from portcullis.masking.engine import MaskingError
    from portcullis.pipeline.mask import build_masker

    cfg = _masking(config_path)
    if not cfg.enabled:
        _fail("masking is disabled in this config (masking.enabled: false)")
    try:
        masker = build_masker(cfg)
    except ValueError as exc:
        _fail(str(exc))
    assert masker is not None
    data = sys.stdin.buffer.read() if file == "-" else Path(file).read_bytes()
    text = data.decode("utf-8", "replace")
    plan = masker.plan(server, frozenset(g for g in groups.split(",") if g))
    try:
        if message:
            _mask_message(masker, plan, text, as_json)
        else:
            _mask_text(masker, plan, text, as_json)
    except MaskingError as exc:
        _fail(f"cannot be masked: {exc}")


def _mask_text(masker: Any, plan: Any, text: str, as_json: bool) -> None:
    from portcullis.masking.engine import Budget

    if plan.detector is None:
        click.echo(text, nl=False)
        return
    findings = plan.detector.find(text, Budget(masker.max_candidates))
    body = {"result": {"text": text}}
    masker.mask(body, "result", plan, "cli")
    rows = []
    for f in findings:
        line, col = _line_col(text, f.start)
        rows.append({"class": f.cls, "line": line, "column": col, "length": f.end - f.start})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        click.echo(body["result"]["text"], nl=False)
        for r, f in zip(rows, findings, strict=True):
            click.echo(f"{r['line']}:{r['column']}: {f.cls}: {_hint(text[f.start : f.end])}", err=True)
        click.echo(f"{len(rows)} finding(s)", err=True)
    sys.exit(1 if rows else 0)


def _mask_message(masker: Any, plan: Any, text: str, as_json: bool) -> None:
    try:
        body = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        _fail(f"not JSON: {exc}")
    if not isinstance(body, dict):
        _fail("a JSON-RPC message is an object")
    part = next((p for p in ("result", "error", "params") if p in body), None)
    if part is None:
        _fail("the message has no result, error or params")
    res = masker.mask(body, part, plan, "cli")
    if as_json:
        click.echo(json.dumps(res.masked, indent=2))
    else:
        click.echo(json.dumps(body, indent=2, ensure_ascii=False))
        for m in res.masked:
            click.echo(f"{m['path']}: {m['class']} x{m['count']}", err=True)
    sys.exit(1 if res.changed else 0)


@click.group("forensic")
def forensic_group() -> None:
    """Break-glass forensics: keys for, and opening of, sealed unmasked originals."""


@forensic_group.command("keygen")
@click.option("--private", "private_path", required=True, type=click.Path(dir_okay=False), help="write the key here")
@click.option("--public", "public_path", required=True, type=click.Path(dir_okay=False), help="for masking.forensic")
def forensic_keygen(private_path: str, public_path: str) -> None:
    """Make an X25519 key pair: the gateway gets the public half, forensics keeps the private half elsewhere."""
    from portcullis.cli.keyfiles import write_key_pair
    from portcullis.masking.seal import keygen

    write_key_pair(private_path, public_path, *keygen())
    click.echo(f"private key: {private_path} (keep it away from the gateway)\npublic key:  {public_path}")


@forensic_group.command("open")
@click.argument("seq", type=int)
@click.option("--key", "key_path", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--config", "config_path", type=click.Path(dir_okay=False))
@click.option("--store", help="store URL (instead of --config)")
def forensic_open(seq: int, key_path: str, config_path: str | None, store: str | None) -> None:
    """Print the unmasked original of record SEQ (see 'portcullis sessions show')."""
    from portcullis.cli.main import _engine
    from portcullis.masking.seal import SealError, load_private, open_sealed
    from portcullis.store.queries import get_record

    rec = get_record(_engine(config_path, store), seq)
    if rec is None:
        _fail(f"no record {seq}")
    if rec["sealed"] is None:
        _fail(f"record {seq} has no sealed original (nothing was masked, or no forensic key was configured)")
    try:
        original = open_sealed(load_private(Path(key_path).read_bytes()), rec["sealed"])
    except (SealError, ValueError) as exc:
        _fail(str(exc))
    sys.stdout.buffer.write(original + b"\n")
