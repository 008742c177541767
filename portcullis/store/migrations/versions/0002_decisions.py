"""records name the policy decision, the rule that made it, and the policy version

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("records") as batch:
        batch.add_column(sa.Column("decision", sa.String(16)))
        batch.add_column(sa.Column("rule", sa.String(200)))
        batch.add_column(sa.Column("policy_version", sa.String(64)))


def downgrade() -> None:
    with op.batch_alter_table("records") as batch:
        batch.drop_column("policy_version")
        batch.drop_column("rule")
        batch.drop_column("decision")
