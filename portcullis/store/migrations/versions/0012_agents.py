"""agents: their tokens (hashed) and their connections (what `portcullis agents list` shows)

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "agent_tokens",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("servers", sa.Text, nullable=False),
        sa.Column("secret_hash", sa.String(128), nullable=False),
        sa.Column("created_ns", sa.BigInteger, nullable=False),
        sa.Column("expires_ns", sa.BigInteger),
        sa.Column("revoked_ns", sa.BigInteger),
    )
    op.create_table(
        "agent_connections",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("token_id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("version", sa.String(64)),
        sa.Column("servers", sa.Text, nullable=False),
        sa.Column("replica", sa.String(64)),
        sa.Column("remote", sa.String(200)),
        sa.Column("connected_ns", sa.BigInteger, nullable=False),
        sa.Column("last_seen_ns", sa.BigInteger, nullable=False),
        sa.Column("disconnected_ns", sa.BigInteger),
        sa.Column("reason", sa.String(200)),
        sa.Column("streams", sa.BigInteger),
        sa.Column("bytes_in", sa.BigInteger),
        sa.Column("bytes_out", sa.BigInteger),
    )
    op.create_index("ix_agent_connections_seen", "agent_connections", ["disconnected_ns", "last_seen_ns"])


def downgrade() -> None:
    op.drop_index("ix_agent_connections_seen", "agent_connections")
    op.drop_table("agent_connections")
    op.drop_table("agent_tokens")
