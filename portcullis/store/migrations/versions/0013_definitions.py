"""tool, prompt and resource definitions pinned per server (rug-pull detection)

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "definitions",
        sa.Column("server", sa.String(200), primary_key=True),
        sa.Column("kind", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(400), primary_key=True),
        sa.Column("accepted_digest", sa.String(64), nullable=False),
        sa.Column("accepted", sa.Text, nullable=False),
        sa.Column("seen_digest", sa.String(64), nullable=False),
        sa.Column("seen", sa.Text, nullable=False),
        sa.Column("first_seen_ns", sa.BigInteger, nullable=False),
        sa.Column("changed_ns", sa.BigInteger),
        sa.Column("findings", sa.Text),
        sa.Column("accepted_by", sa.String(400)),
        sa.Column("accepted_ns", sa.BigInteger),
    )


def downgrade() -> None:
    op.drop_table("definitions")
