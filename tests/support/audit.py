"""Audit-trail test helpers: a signing key pair on disk and a migrated SQLite store (also as fixtures)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine

from portcullis.store.audit_keys import keygen
from portcullis.store.db import make_engine, upgrade


def key_files(where: Path) -> tuple[Path, Path]:
    """(private, public) PEM files of a new Ed25519 checkpoint key in ``where``."""
    priv, pub = keygen()
    (where / "audit.key").write_bytes(priv)
    (where / "audit.pub").write_bytes(pub)
    return where / "audit.key", where / "audit.pub"


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    return key_files(tmp_path)


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    e = make_engine(f"sqlite:///{tmp_path / 'audit.db'}")
    upgrade(e)
    return e
