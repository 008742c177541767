"""all-groups approval rules, the approver groups each vote counted for, and the rule a grant came from

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("approvals") as batch:
        batch.add_column(sa.Column("all_groups", sa.Integer))
    with op.batch_alter_table("approval_votes") as batch:
        batch.add_column(sa.Column("voter_groups", sa.Text))
    with op.batch_alter_table("grants") as batch:
        batch.add_column(sa.Column("rule", sa.String(200)))


def downgrade() -> None:
    with op.batch_alter_table("grants") as batch:
        batch.drop_column("rule")
    with op.batch_alter_table("approval_votes") as batch:
        batch.drop_column("voter_groups")
    with op.batch_alter_table("approvals") as batch:
        batch.drop_column("all_groups")
