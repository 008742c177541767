"""initial schema: sessions and records

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql, sqlite

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sqlite.INTEGER(), "sqlite").with_variant(postgresql.BIGINT(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "sessions",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("server", sa.String(200), nullable=False),
        sa.Column("era", sa.String(16), nullable=False),
        sa.Column("protocol_version", sa.String(32)),
        sa.Column("client_info", sa.Text),
        sa.Column("principal", sa.String(400)),
        sa.Column("upstream_session", sa.String(400)),
        sa.Column("created_ns", sa.BigInteger, nullable=False),
        sa.Column("ended_ns", sa.BigInteger),
        sa.Column("end_reason", sa.String(200)),
    )
    op.create_index("ix_sessions_created", "sessions", ["created_ns"])
    op.create_table(
        "records",
        sa.Column("seq", BigId, primary_key=True, autoincrement=True),
        sa.Column("ts_ns", sa.BigInteger, nullable=False),
        sa.Column("server", sa.String(200), nullable=False),
        sa.Column("session_id", sa.String(64)),
        sa.Column("direction", sa.String(8), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("method", sa.String(200)),
        sa.Column("msg_id", sa.String(200)),
        sa.Column("flow_id", sa.BigInteger, nullable=False),
        sa.Column("outcome", sa.String(32)),
        sa.Column("latency_us", sa.Integer),
        sa.Column("detail", sa.Text),
        sa.Column("principal", sa.String(400)),
        sa.Column("payload", sa.LargeBinary),
    )
    op.create_index("ix_records_session_seq", "records", ["session_id", "seq"])
    op.create_index("ix_records_ts", "records", ["ts_ns"])


def downgrade() -> None:
    op.drop_table("records")
    op.drop_table("sessions")
