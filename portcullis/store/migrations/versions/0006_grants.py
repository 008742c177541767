"""time-boxed grants from approvals; the requester's justification on approval requests

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "grants",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("approval_id", sa.String(32), nullable=False),
        sa.Column("requester_key", sa.String(400), nullable=False),
        sa.Column("requester", sa.String(400), nullable=False),
        sa.Column("server", sa.String(200), nullable=False),
        sa.Column("method", sa.String(200), nullable=False),
        sa.Column("target", sa.String(400)),
        sa.Column("arguments", sa.Text),
        sa.Column("created_ns", sa.BigInteger, nullable=False),
        sa.Column("expires_ns", sa.BigInteger, nullable=False),
        sa.Column("granted_by", sa.String(400), nullable=False),
        sa.Column("revoked_ns", sa.BigInteger),
    )
    op.create_index("ix_grants_match", "grants", ["requester_key", "server", "expires_ns"])
    with op.batch_alter_table("approvals") as batch:
        batch.add_column(sa.Column("justification", sa.Text))


def downgrade() -> None:
    with op.batch_alter_table("approvals") as batch:
        batch.drop_column("justification")
    op.drop_table("grants")
