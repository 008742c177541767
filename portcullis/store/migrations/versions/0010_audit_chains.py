"""one audit chain per writer (the gateway, the CLI, later each replica); checkpoints linked to their predecessor

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("records") as batch:
        batch.add_column(sa.Column("chain", sa.String(64)))
    with op.batch_alter_table("checkpoints") as batch:
        batch.add_column(sa.Column("chain", sa.String(64)))
        batch.add_column(sa.Column("counter", sa.BigInteger))
        batch.add_column(sa.Column("prev_link", sa.LargeBinary))
    op.create_index("ix_records_chain_seq", "records", ["chain", "seq"])


def downgrade() -> None:
    op.drop_index("ix_records_chain_seq", "records")
    with op.batch_alter_table("checkpoints") as batch:
        batch.drop_column("prev_link")
        batch.drop_column("counter")
        batch.drop_column("chain")
    with op.batch_alter_table("records") as batch:
        batch.drop_column("chain")
