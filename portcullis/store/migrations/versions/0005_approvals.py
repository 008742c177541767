"""approval requests for held calls, and the votes on them

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql, sqlite

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sqlite.INTEGER(), "sqlite").with_variant(postgresql.BIGINT(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "approvals",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("created_ns", sa.BigInteger, nullable=False),
        sa.Column("expires_ns", sa.BigInteger, nullable=False),
        sa.Column("server", sa.String(200), nullable=False),
        sa.Column("method", sa.String(200), nullable=False),
        sa.Column("target", sa.String(400)),
        sa.Column("args_digest", sa.String(80), nullable=False),
        sa.Column("requester_key", sa.String(400), nullable=False),
        sa.Column("requester", sa.String(400), nullable=False),
        sa.Column("requester_subject", sa.String(400), nullable=False),
        sa.Column("rule", sa.String(200)),
        sa.Column("policy_version", sa.String(64)),
        sa.Column("approvers", sa.Text, nullable=False),
        sa.Column("required", sa.Integer, nullable=False),
        sa.Column("session_id", sa.String(64)),
        sa.Column("decided_ns", sa.BigInteger),
        sa.Column("decided_by", sa.String(400)),
        sa.Column("reason", sa.Text),
        sa.Column("released_ns", sa.BigInteger),
    )
    op.create_index("ix_approvals_match", "approvals", ["requester_key", "args_digest", "state"])
    op.create_index("ix_approvals_state_created", "approvals", ["state", "created_ns"])
    op.create_table(
        "approval_votes",
        sa.Column("seq", BigId, primary_key=True, autoincrement=True),
        sa.Column("approval_id", sa.String(32), nullable=False),
        sa.Column("voter_subject", sa.String(400), nullable=False),
        sa.Column("voter", sa.String(400), nullable=False),
        sa.Column("vote", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("ts_ns", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_approval_votes_approval", "approval_votes", ["approval_id"])


def downgrade() -> None:
    op.drop_table("approval_votes")
    op.drop_table("approvals")
