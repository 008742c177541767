"""Fixtures shared by the unit tests of the store (tests/support/audit.py): ``engine`` and ``store_url`` run a test
on SQLite and on PostgreSQL."""

from tests.support.audit import engine, keys, store_url

__all__ = ["engine", "keys", "store_url"]
