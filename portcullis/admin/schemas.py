"""JSON Schemas of the admin API's bodies and answers (the OpenAPI document's components), and the JSON forms of
the objects they describe. Schemas are strict where the gateway controls the shape, open where records carry
whatever a client or a server sent."""

from __future__ import annotations

import re
from typing import Any

from portcullis.policy.rules import Rule
from portcullis.store.agent_tokens import AgentToken
from portcullis.store.apikeys import ApiKey

NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def obj(props: dict[str, Any], required: list[str] | None = None, extra: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "object", "properties": props}
    if required:
        out["required"] = required
    if not extra:
        out["additionalProperties"] = False
    return out


def arr(items: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": items}


def nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


STR = {"type": "string"}
INT = {"type": "integer"}
BOOL = {"type": "boolean"}
STRS = arr(STR)
N_STR = nullable(STR)
N_INT = nullable(INT)

ERROR = obj({"error": STR, "message": STR}, ["error", "message"], extra=False)

ME = obj(
    {
        "subject": STR,
        "email": N_STR,
        "groups": STRS,
        "kind": STR,
        "issuer": N_STR,
        "roles": arr({"type": "string", "enum": ["admin", "approver", "auditor"]}),
        "via": {"type": "string", "enum": ["bearer", "console"]},
        "csrf_token": STR,
    },
    ["subject", "groups", "roles", "via"],
)

HEALTH = obj(
    {
        "ready": BOOL,
        "store": {"type": "string", "enum": ["ok", "failing"]},
        "draining": BOOL,
        "policy_version": STR,
        "servers": arr(obj({"name": STR, "transport": STR, "breaker": N_STR, "agents": INT}, ["name", "transport"])),
        "agents": arr({"type": "object"}),
    },
    ["ready", "store", "draining", "policy_version", "servers", "agents"],
)

APPROVAL = obj(
    {
        "id": STR,
        "state": STR,
        "created_ns": INT,
        "expires_ns": INT,
        "server": STR,
        "method": STR,
        "target": N_STR,
        "requester": STR,
        "requester_subject": STR,
        "rule": N_STR,
        "approvers": STRS,
        "required": INT,
        "justification": N_STR,
        "arguments": {},
        "decided_by": N_STR,
        "reason": N_STR,
        "session_id": N_STR,
        "votes": arr(obj({"voter": STR, "vote": STR, "reason": N_STR, "ts_ns": INT})),
    },
    ["id", "state", "server", "method", "requester", "approvers"],
)

GRANT = obj(
    {
        "id": STR,
        "approval_id": STR,
        "requester": STR,
        "server": STR,
        "method": STR,
        "target": N_STR,
        "arguments": nullable({"type": "object"}),
        "created_ns": INT,
        "expires_ns": INT,
        "granted_by": STR,
        "revoked_ns": N_INT,
        "rule": N_STR,
    },
    ["id", "approval_id", "server", "expires_ns"],
)

REASON = {"type": "string", "maxLength": 2000}
DECISION_BODY = obj({"reason": REASON}, extra=False)  # deny, review
APPROVE_BODY = obj(
    {
        "reason": REASON,
        "grant": obj(  # time-boxed access for calls like this one (approvals/book.py MAX_GRANT_MINUTES)
            {
                "minutes": {"type": "integer", "minimum": 1, "maximum": 1440},
                "arguments": nullable({"type": "object", "additionalProperties": STR}),
            },
            ["minutes"],
            extra=False,
        ),
    },
    extra=False,
)

SESSION = obj(
    {
        "id": STR,
        "server": STR,
        "era": STR,
        "protocol_version": N_STR,
        "created_ns": INT,
        "ended_ns": N_INT,
        "end_reason": N_STR,
        "records": INT,
        "subject": N_STR,
        "client_info": {},
        "principal": {},
    },
    ["id", "server", "created_ns", "records"],
)

RECORD = obj(
    {
        "seq": N_INT,
        "ts": STR,
        "ts_ns": INT,
        "server": STR,
        "session_id": N_STR,
        "direction": STR,
        "kind": STR,
        "method": N_STR,
        "msg_id": N_STR,
        "outcome": N_STR,
        "latency_us": N_INT,
        "detail": N_STR,
        "principal": N_STR,
        "decision": N_STR,
        "rule": N_STR,
        "masked": N_STR,
        "payload": N_STR,
        "display_masked": arr({"type": "object"}),
        "hash": N_STR,
    },
    ["ts_ns", "server", "direction", "kind"],
)

TIMELINE = obj(
    {"session": nullable(SESSION), "records": arr(RECORD), "truncated": BOOL}, ["session", "records", "truncated"]
)

RULE = obj(
    {
        "id": STR,
        "effect": STR,
        "tier": STR,
        "line": INT,
        "description": STR,
        "users": nullable(STRS),
        "groups": nullable(STRS),
        "except_groups": nullable(STRS),
        "clients": nullable(STRS),
        "servers": nullable(STRS),
        "tools": nullable(STRS),
        "resources": nullable(STRS),
        "prompts": nullable(STRS),
        "methods": nullable(STRS),
        "condition": N_STR,
        "approvers": STRS,
        "approvals": N_INT,
    },
    ["id", "effect", "tier"],
)

POLICY = obj(
    {"version": STR, "source": STR, "default": STR, "rules": arr(RULE), "defaults": arr(RULE), "problems": STRS},
    ["version", "default", "rules", "defaults"],
)

PRINCIPAL = obj(
    {
        "subject": {"type": "string", "minLength": 1},
        "groups": STRS,
        "email": N_STR,
        "client_id": N_STR,
        "kind": STR,
    },
    ["subject"],
    extra=False,
)

DRY_RUN_BODY = obj(
    {
        "principal": PRINCIPAL,
        "server": {"type": "string", "minLength": 1},
        "method": STR,
        "target": N_STR,
        "arguments": {"type": "object"},
        "annotations": nullable({"type": "object"}),
    },
    ["principal", "server"],
    extra=False,
)

EXPLANATION = obj(
    {
        "decision": {"type": "string", "enum": ["allow", "deny", "hold"]},
        "rule": N_STR,
        "reason": STR,
        "policy_version": STR,
        "approvers": STRS,
        "trace": arr(
            obj({"rule": STR, "tier": STR, "effect": STR, "status": STR, "detail": STR, "consulted": BOOL, "line": INT})
        ),
    },
    ["decision", "rule", "reason", "policy_version", "approvers", "trace"],
)

PERMISSION = obj(
    {
        "kind": STR,
        "name": STR,
        "decision": {"type": "string", "enum": ["allow", "deny", "hold", "depends"]},
        "rule": N_STR,
        "approvers": STRS,
        "reason": STR,
    },
    ["kind", "name", "decision"],
)

PERMISSIONS = obj(
    {
        "principal": obj({"subject": STR, "groups": STRS, "email": N_STR}),
        "policy_version": STR,
        "servers": arr(
            obj(
                {"server": STR, "access": STR, "items": arr(PERMISSION), "unlisted": PERMISSION},
                ["server", "access", "items"],
            )
        ),
    },
    ["principal", "policy_version", "servers"],
)

AGENT = obj(
    {"name": STR, "servers": STRS, "tokens": INT, "connections": INT, "figures": {"type": "object"}},
    ["name", "servers", "tokens", "connections"],
)

AGENT_TOKEN = obj(
    {
        "id": STR,
        "name": STR,
        "servers": STRS,
        "created_ns": INT,
        "expires_ns": N_INT,
        "revoked_ns": N_INT,
        "usable": BOOL,
    },
    ["id", "name", "servers", "usable"],
)
AGENT_TOKEN_BODY = obj(
    {
        "name": {"type": "string", "pattern": NAME.pattern},
        "servers": {"type": "array", "items": STR, "minItems": 1},
        "ttl_seconds": nullable({"type": "integer", "minimum": 60, "maximum": 366 * 86400}),
    },
    ["name", "servers"],
    extra=False,
)
CREATED_AGENT_TOKEN = {**AGENT_TOKEN, "required": [*AGENT_TOKEN["required"], "token"]}
CREATED_AGENT_TOKEN["properties"] = {**AGENT_TOKEN["properties"], "token": STR}

API_KEY = obj(
    {
        "id": STR,
        "name": STR,
        "owner": STR,
        "groups": STRS,
        "created_ns": INT,
        "expires_ns": N_INT,
        "revoked_ns": N_INT,
        "usable": BOOL,
    },
    ["id", "name", "owner", "groups", "usable"],
)
API_KEY_BODY = obj(
    {
        "name": {"type": "string", "pattern": NAME.pattern},
        "owner": {"type": "string", "minLength": 1, "maxLength": 200},
        "groups": arr({"type": "string", "minLength": 1, "maxLength": 200}),
        "ttl_seconds": nullable({"type": "integer", "minimum": 60, "maximum": 366 * 86400}),
    },
    ["name", "owner"],
    extra=False,
)
CREATED_API_KEY = {**API_KEY, "required": [*API_KEY["required"], "token"]}
CREATED_API_KEY["properties"] = {**API_KEY["properties"], "token": STR}

REVOKED = obj({"id": STR, "revoked": BOOL}, ["id", "revoked"])


def _names(value: Any) -> list[str] | None:
    if value is None:
        return None
    patterns = getattr(value, "patterns", None)
    return sorted(patterns if patterns is not None else value)


def rule_json(r: Rule) -> dict[str, Any]:
    return {
        "id": r.id,
        "effect": r.effect,
        "tier": r.tier,
        "line": r.line,
        "description": r.description,
        "users": _names(r.users),
        "groups": _names(r.groups),
        "except_groups": _names(r.except_groups),
        "clients": _names(r.clients),
        "servers": _names(r.servers),
        "tools": _names(r.tools),
        "resources": _names(r.resources),
        "prompts": _names(r.prompts),
        "methods": _names(r.methods),
        "condition": None if r.condition is None else str(getattr(r.condition, "source", r.condition)),
        "approvers": list(r.approvers),
        "approvals": r.approvals,
    }


def agent_token_json(t: AgentToken) -> dict[str, Any]:
    return {
        "id": t.id,
        "name": t.name,
        "servers": list(t.servers),
        "created_ns": t.created_ns,
        "expires_ns": t.expires_ns,
        "revoked_ns": t.revoked_ns,
        "usable": t.usable(),
    }


def api_key_json(k: ApiKey) -> dict[str, Any]:
    return {
        "id": k.id,
        "name": k.name,
        "owner": k.owner,
        "groups": list(k.groups),
        "created_ns": k.created_ns,
        "expires_ns": k.expires_ns,
        "revoked_ns": k.revoked_ns,
        "usable": k.usable(),
    }
