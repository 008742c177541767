"""Fixtures shared by the unit tests of the audit trail (tests/support/audit.py)."""

from tests.support.audit import engine, keys

__all__ = ["engine", "keys"]
