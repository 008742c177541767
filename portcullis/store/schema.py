"""The schema, portable across SQLite and PostgreSQL. Changes go through an alembic migration."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, Integer, LargeBinary, MetaData, String, Table, Text
from sqlalchemy.dialects import postgresql, sqlite

metadata = MetaData()

# BIGINT that is still SQLite's rowid alias (INTEGER PRIMARY KEY) on SQLite
BigId = BigInteger().with_variant(sqlite.INTEGER(), "sqlite").with_variant(postgresql.BIGINT(), "postgresql")

sessions = Table(
    "sessions",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("server", String(200), nullable=False),
    Column("era", String(16), nullable=False),
    Column("protocol_version", String(32)),
    Column("client_info", Text),
    Column("principal", String(400)),
    Column("upstream_session", String(400)),
    Column("created_ns", BigInteger, nullable=False),
    Column("ended_ns", BigInteger),
    Column("end_reason", String(200)),
    Column("owner", String(400)),  # the caller key that opened it: only that caller may continue it, on any replica
    Column("state", Text),  # JSON: what another replica needs to continue it (see server/gateway.py adopt_session)
)

records = Table(
    "records",
    metadata,
    Column("seq", BigId, primary_key=True, autoincrement=True),
    Column("ts_ns", BigInteger, nullable=False),
    Column("server", String(200), nullable=False),
    Column("session_id", String(64)),
    Column("direction", String(8), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("method", String(200)),
    Column("msg_id", String(200)),
    Column("flow_id", BigInteger, nullable=False),
    Column("outcome", String(32)),
    Column("latency_us", Integer),
    Column("detail", Text),
    Column("principal", String(400)),
    Column("payload", LargeBinary),
    Column("decision", String(16)),
    Column("rule", String(200)),
    Column("policy_version", String(64)),
    Column("masked", Text),
    Column("sealed", LargeBinary),
    Column("prev_hash", LargeBinary),  # the audit chain: the previous record's hash (store/chain.py)
    Column("hash", LargeBinary),
    Column("chain", String(64)),  # which writer's chain (the gateway's, the CLI's; one per replica later)
)

checkpoints = Table(
    "checkpoints",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("seq", BigInteger, nullable=False),  # the last record the checkpoint seals
    Column("hash", LargeBinary, nullable=False),  # that record's chain hash
    Column("ts_ns", BigInteger, nullable=False),
    Column("key_id", String(64), nullable=False),
    Column("signature", LargeBinary, nullable=False),  # Ed25519 over chain.checkpoint_message(...)
    Column("chain", String(64)),
    Column("counter", BigInteger),  # 1, 2, 3, … per chain: a missing checkpoint shows
    Column("prev_link", LargeBinary),  # SHA-256 of the previous checkpoint's signature in this chain
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("owner", String(400), nullable=False),
    Column("groups", Text, nullable=False),
    Column("secret_hash", String(128), nullable=False),
    Column("created_ns", BigInteger, nullable=False),
    Column("expires_ns", BigInteger),
    Column("revoked_ns", BigInteger),
)

approvals = Table(
    "approvals",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("state", String(16), nullable=False),
    Column("created_ns", BigInteger, nullable=False),
    Column("expires_ns", BigInteger, nullable=False),
    Column("server", String(200), nullable=False),
    Column("method", String(200), nullable=False),
    Column("target", String(400)),
    Column("args_digest", String(80), nullable=False),
    Column("requester_key", String(400), nullable=False),
    Column("requester", String(400), nullable=False),
    Column("requester_subject", String(400), nullable=False),
    Column("rule", String(200)),
    Column("policy_version", String(64)),
    Column("approvers", Text, nullable=False),  # JSON list of groups
    Column("required", Integer, nullable=False),
    Column("session_id", String(64)),
    Column("decided_ns", BigInteger),
    Column("decided_by", String(400)),
    Column("reason", Text),
    Column("released_ns", BigInteger),
    Column("justification", Text),
    Column("all_groups", Integer),  # 1: one approval from each approver group
    Column("arguments", Text),  # the call's params (without _meta) as JSON, masked: what approvers read
)

approval_votes = Table(
    "approval_votes",
    metadata,
    Column("seq", BigId, primary_key=True, autoincrement=True),
    Column("approval_id", String(32), nullable=False),
    Column("voter_subject", String(400), nullable=False),
    Column("voter", String(400), nullable=False),
    Column("vote", String(16), nullable=False),
    Column("reason", Text),
    Column("ts_ns", BigInteger, nullable=False),
    Column("voter_groups", Text),  # JSON list: the approver groups the voter belonged to when voting
)

grants = Table(
    "grants",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("approval_id", String(32), nullable=False),
    Column("requester_key", String(400), nullable=False),
    Column("requester", String(400), nullable=False),
    Column("server", String(200), nullable=False),
    Column("method", String(200), nullable=False),
    Column("target", String(400)),
    Column("arguments", Text),  # JSON {name: glob} or NULL (any arguments)
    Column("created_ns", BigInteger, nullable=False),
    Column("expires_ns", BigInteger, nullable=False),
    Column("granted_by", String(400), nullable=False),
    Column("revoked_ns", BigInteger),
    Column("rule", String(200)),  # the hold rule whose approval granted it: a grant serves that rule only
)

agent_tokens = Table(
    "agent_tokens",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("servers", Text, nullable=False),  # JSON list: the server names this token may announce
    Column("secret_hash", String(128), nullable=False),
    Column("created_ns", BigInteger, nullable=False),
    Column("expires_ns", BigInteger),
    Column("revoked_ns", BigInteger),
)

agent_connections = Table(
    "agent_connections",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("token_id", String(32), nullable=False),
    Column("name", String(200), nullable=False),
    Column("version", String(64)),
    Column("servers", Text, nullable=False),  # JSON list: what it announced (and was allowed)
    Column("replica", String(64)),  # the gateway replica (its audit chain) it is connected to
    Column("remote", String(200)),
    Column("connected_ns", BigInteger, nullable=False),
    Column("last_seen_ns", BigInteger, nullable=False),
    Column("disconnected_ns", BigInteger),
    Column("reason", String(200)),
    Column("streams", BigInteger),
    Column("bytes_in", BigInteger),
    Column("bytes_out", BigInteger),
)

bindings = Table(
    "bindings",
    metadata,
    Column("server", String(200), primary_key=True),
    Column("what", String(16), primary_key=True),  # task, state
    Column("digest", String(64), primary_key=True),  # SHA-256 of the minted value (a requestState may be large)
    Column("owner", String(400), nullable=False),  # the caller key it was minted for
    Column("created_ns", BigInteger, nullable=False),
)

definitions = Table(
    "definitions",
    metadata,
    Column("server", String(200), primary_key=True),
    Column("kind", String(32), primary_key=True),  # tool, prompt, resource, resource_template
    Column("name", String(400), primary_key=True),
    Column("accepted_digest", String(64), nullable=False),  # the definition trusted (first seen, pinned or accepted)
    Column("accepted", Text, nullable=False),  # its canonical JSON
    Column("seen_digest", String(64), nullable=False),  # the newest one the server announced
    Column("seen", Text, nullable=False),
    Column("first_seen_ns", BigInteger, nullable=False),
    Column("changed_ns", BigInteger),  # when seen first differed from accepted (NULL: they agree)
    Column("findings", Text),  # JSON list of suspicious-text findings in the seen definition
    Column("accepted_by", String(400)),
    Column("accepted_ns", BigInteger),
)

Index("ix_grants_match", grants.c.requester_key, grants.c.server, grants.c.expires_ns)
Index("ix_approvals_match", approvals.c.requester_key, approvals.c.args_digest, approvals.c.state)
Index("ix_approvals_state_created", approvals.c.state, approvals.c.created_ns)
Index("ix_approval_votes_approval", approval_votes.c.approval_id)
Index("ix_records_chain_seq", records.c.chain, records.c.seq)
Index("ix_records_session_seq", records.c.session_id, records.c.seq)
Index("ix_records_ts", records.c.ts_ns)
Index("ix_sessions_created", sessions.c.created_ns)
Index("ix_agent_connections_seen", agent_connections.c.disconnected_ns, agent_connections.c.last_seen_ns)

console_sessions = Table(  # web console logins (portcullis/admin/console.py); the cookie holds the id, never stored
    "console_sessions",
    metadata,
    Column("id_hash", String(64), primary_key=True),  # SHA-256 of the cookie's secret
    Column("caller", Text, nullable=False),  # JSON: the principal as the token named it (no token is kept)
    Column("csrf", String(64), nullable=False),  # the session's CSRF token (sent by the console in X-CSRF-Token)
    Column("created_ns", BigInteger, nullable=False),
    Column("expires_ns", BigInteger, nullable=False),  # sign-in + admin.console.session_ttl
    Column("ended_ns", BigInteger),  # logout
)
