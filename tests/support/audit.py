"""Audit-trail test helpers: a signing key pair on disk, and a migrated store on SQLite and on PostgreSQL (as
fixtures: every test that takes ``engine`` runs on both backends)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from portcullis.store.audit_keys import keygen
from portcullis.store.db import make_engine, upgrade
from tests.support.postgres import pg_schema


def key_files(where: Path) -> tuple[Path, Path]:
    """(private, public) PEM files of a new Ed25519 checkpoint key in ``where``."""
    priv, pub = keygen()
    (where / "audit.key").write_bytes(priv)
    (where / "audit.pub").write_bytes(pub)
    return where / "audit.key", where / "audit.pub"


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    return key_files(tmp_path)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty store on each backend: a SQLite file, or a schema of its own on the shared PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'audit.db'}"
    else:
        with pg_schema() as url:
            yield url


@pytest.fixture
def engine(store_url: str) -> Iterator[Engine]:
    """A migrated store on each backend."""
    e = make_engine(store_url)
    upgrade(e)
    try:
        yield e
    finally:
        e.dispose()
