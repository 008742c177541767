"""The admin REST API under ``/admin/api``: approvals, sessions and the audit trail, policies, agents and keys.

Every operation is declared once in :data:`OPERATIONS` (method, path, role, query parameters, body and answer
schemas); the router and the OpenAPI document (``GET /admin/api/openapi.json``, portcullis/admin/openapi.py) are both
built from that list, so the document cannot drift from what is served. Authentication, roles, CSRF and the
``admin_access`` trail: portcullis/admin/access.py. Errors: ``{"error": CODE, "message": TEXT}`` (admin/http.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web
from sqlalchemy import select

from portcullis.admin import schemas as S
from portcullis.admin.access import Access, Role, Who, caller_doc
from portcullis.admin.http import SECURITY_HEADERS, ApiError, json_response, shaped
from portcullis.admin.permissions import effective_permissions, explain_json, for_caller, named_items
from portcullis.approvals.book import ApprovalError, Voter
from portcullis.approvals.model import STATES
from portcullis.audit.codec import record_json
from portcullis.audit.document import export_session
from portcullis.audit.search import DECISIONS, MAX_TEXT, Query, parse_when, search
from portcullis.policy.model import PolicyRequest, Principal
from portcullis.server.gateway import Gateway
from portcullis.store import agent_tokens, apikeys
from portcullis.store.queries import count_session_records, get_session, list_sessions, session_records
from portcullis.store.schema import grants

MAX_REASON = 2000
MAX_BODY = 64 * 1024
TIMELINE_LIMIT = 5000
EXPORT_LIMIT = 50_000  # records; a longer session is exported with the CLI
log = logging.getLogger("portcullis.admin")
STREAM_POLL = 1.0  # seconds between looks at the store for a live inbox (other replicas' changes)
STREAM_HEARTBEAT = 15.0
STREAM_LIFETIME = 600.0  # seconds; then the browser's EventSource reconnects (and authenticates again)
STREAM_RECHECK = 5.0  # seconds between checks that a console stream's session still lives
STREAMS_PER_CALLER = 4
STREAMS_TOTAL = 200

AUDIT_QUERY = (
    "principal",
    "group",
    "server",
    "tool",
    "method",
    "decision",
    "kind",
    "session",
    "since",
    "until",
    "text",
    "limit",
    "cursor",
    "responses",
)


@dataclass(frozen=True)
class Param:
    name: str
    description: str
    schema: dict[str, Any] = field(default_factory=lambda: {"type": "string"})


@dataclass(frozen=True)
class Operation:
    method: str
    path: str  # under /admin/api
    name: str  # operationId
    summary: str
    tag: str
    role: Role | None  # None: any authenticated caller (the handler may check more)
    handler: str  # AdminApi method name
    query: tuple[Param, ...] = ()
    body: dict[str, Any] | None = None
    answer: dict[str, Any] = field(default_factory=lambda: {"type": "object"})
    answer_type: str = "application/json"
    errors: tuple[int, ...] = ()

    @property
    def query_keys(self) -> frozenset[str]:
        return frozenset(p.name for p in self.query)


def _p(name: str, description: str, **schema: Any) -> Param:
    return Param(name, description, schema or {"type": "string"})


_TEXT: dict[str, Any] = {"type": "string", "minLength": 1, "maxLength": MAX_TEXT}
_LIMIT = _p("limit", "most rows to return", type="integer", minimum=1, maximum=1000)
WHEN = {
    "anyOf": [
        {"type": "string", "format": "date-time"},
        {"type": "string", "pattern": r"^\s*\d{1,9}(\.\d{1,6})?\s*[smhdwSMHDW]\s*$"},  # back from now
        {"type": "string", "pattern": r"^\d{1,18}$"},  # ns since the epoch
    ]
}


def _when(name: str, description: str) -> Param:
    return Param(name, description + " (RFC 3339, a duration back from now such as 2h or 7d, or ns)", WHEN)


_STATE = _p("state", "only requests in this state", type="string", enum=list(STATES))

OPERATIONS: tuple[Operation, ...] = (
    Operation("GET", "/me", "whoami", "The caller, its roles and (console) its CSRF token", "identity", None, "me",
              answer=S.ME),
    Operation("GET", "/health", "health", "Readiness, the store, the policy, the servers and the agents", "health",
              None, "health", answer=S.HEALTH),
    Operation("GET", "/approvals", "listApprovals",
              "Approval requests the caller asked for or may decide (newest first)", "approvals", None, "approvals",
              query=(_STATE, _LIMIT), answer=S.obj({"approvals": S.arr(S.APPROVAL)}, ["approvals"])),
    Operation("GET", "/approvals/stream", "streamApprovals",
              "Server-sent events: the caller's approvals list whenever it changes (event `approvals`)", "approvals",
              None, "approvals_stream", query=(_STATE,), answer={"type": "string"}, answer_type="text/event-stream"),
    Operation("GET", "/approvals/{id}", "getApproval", "One request with its votes (requester or approver only)",
              "approvals", None, "approval", answer=S.APPROVAL, errors=(404,)),
    Operation("POST", "/approvals/{id}/approve", "approve",
              "Approve (approver groups only, never the requester; optionally grant time-boxed access)", "approvals",
              None, "approve", body=S.APPROVE_BODY, answer=S.APPROVAL, errors=(400, 404, 409)),
    Operation("POST", "/approvals/{id}/deny", "deny", "Deny, with a reason", "approvals", None, "deny",
              body=S.DECISION_BODY, answer=S.APPROVAL, errors=(400, 404, 409)),
    Operation("POST", "/approvals/{id}/review", "review", "Review a break-glass call after the fact", "approvals",
              None, "review", body=S.DECISION_BODY, answer=S.APPROVAL, errors=(400, 404, 409)),
    Operation("GET", "/grants", "listGrants", "Time-boxed grants made by approvals (live ones unless all=true)",
              "approvals", Role.AUDITOR, "grants", query=(_p("all", "also expired and revoked", type="boolean"),),
              answer=S.obj({"grants": S.arr(S.GRANT)}, ["grants"])),
    Operation("GET", "/sessions", "listSessions", "Recorded sessions, newest first", "sessions", Role.AUDITOR,
              "sessions", query=(_p("server", "only this server"), _p("principal", "sessions opened by this subject"),
                                 _when("before", "created before"), _LIMIT),
              answer=S.obj({"sessions": S.arr(S.SESSION)}, ["sessions"])),
    Operation("GET", "/sessions/{session}", "getSession",
              "One session's timeline: every record in order, payloads as recorded (masked), decisions, latencies",
              "sessions", Role.AUDITOR, "session", answer=S.TIMELINE, errors=(404,)),
    Operation("GET", "/sessions/{session}/export", "exportSession",
              "The session document of `portcullis sessions export` (verifiable, replayable): the record of record, "
              "client-sent values as sent", "sessions", Role.ADMIN, "session_export",
              answer=S.obj({"format": {"type": "string"}}, ["format"]), errors=(404, 413)),
    Operation("GET", "/audit/records", "searchAudit", "Search the audit trail (as `portcullis audit search`)", "audit",
              Role.AUDITOR, "audit_records",
              query=(_p("principal", "the caller's subject, client id or e-mail (exact)", **_TEXT),
                     _p("group", "a group of the caller", **_TEXT), _p("server", "server name"),
                     _p("tool", "tool name", **_TEXT), _p("method", "JSON-RPC method or event"),
                     _p("decision", "the policy's decision", type="string", enum=list(DECISIONS)),
                     _p("kind", "record kind (request, result, error, notification, an event kind)"),
                     _p("session", "session id"), _p("text", "substring of the masked payload or detail", **_TEXT),
                     _when("since", "records at or after"), _when("until", "records before"),
                     _LIMIT, _p("cursor", "the next_cursor of the previous page", type="integer", minimum=0,
                        maximum=2**63 - 1),
                     _p("responses", "include each request's recorded response", type="boolean")),
              answer=S.obj({"records": S.arr(S.RECORD), "next_cursor": S.nullable({"type": "integer"})},
                           ["records", "next_cursor"])),
    Operation("GET", "/audit/exports", "auditExports", "The audit exports' counters", "audit", Role.AUDITOR,
              "audit_exports", answer=S.obj({"exports": S.arr({"type": "object"})}, ["exports"])),
    Operation("GET", "/policy", "getPolicy", "The policy in force: version, default, rules", "policy", Role.AUDITOR,
              "policy", answer=S.POLICY),
    Operation("POST", "/policy/dry-run", "dryRunPolicy",
              "Decide one request under the policy in force and explain which rule decided and why", "policy",
              Role.AUDITOR, "dry_run", body=S.DRY_RUN_BODY, answer=S.EXPLANATION, errors=(400,)),
    Operation("GET", "/policy/permissions", "effectivePermissions",
              "What a principal may call on each server, and what needs approval (no parameters: the caller "
              "itself; another principal, or anyone in some groups, needs the auditor role)", "policy", None,
              "permissions",
              query=(_p("subject", "the principal's subject"), _p("groups", "comma-separated groups"),
                     _p("email", "the principal's email")),
              answer=S.PERMISSIONS, errors=(400,)),
    Operation("GET", "/agents", "listAgents", "Agents: their tokens and live connections", "agents", Role.AUDITOR,
              "agents", answer=S.obj({"agents": S.arr(S.AGENT)}, ["agents"])),
    Operation("GET", "/agent-tokens", "listAgentTokens", "Agent tokens (never their secrets)", "agents",
              Role.AUDITOR, "agent_tokens", answer=S.obj({"agent_tokens": S.arr(S.AGENT_TOKEN)}, ["agent_tokens"])),
    Operation("POST", "/agent-tokens", "createAgentToken", "A new agent token; its secret is shown once", "agents",
              Role.ADMIN, "agent_token_create", body=S.AGENT_TOKEN_BODY, answer=S.CREATED_AGENT_TOKEN,
              errors=(400,)),
    Operation("POST", "/agent-tokens/{id}/revoke", "revokeAgentToken", "Revoke an agent token", "agents", Role.ADMIN,
              "agent_token_revoke", answer=S.REVOKED, errors=(404,)),
    Operation("GET", "/api-keys", "listApiKeys", "API keys (never their secrets)", "keys", Role.AUDITOR, "api_keys",
              answer=S.obj({"api_keys": S.arr(S.API_KEY)}, ["api_keys"])),
    Operation("POST", "/api-keys", "createApiKey", "A new API key; its secret is shown once", "keys", Role.ADMIN,
              "api_key_create", body=S.API_KEY_BODY, answer=S.CREATED_API_KEY, errors=(400,)),
    Operation("POST", "/api-keys/{id}/revoke", "revokeApiKey", "Revoke an API key", "keys", Role.ADMIN,
              "api_key_revoke", answer=S.REVOKED, errors=(404,)),
)  # fmt: skip

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class AdminApi:
    def __init__(self, gw: Gateway, access: Access) -> None:
        self.gw = gw
        self.access = access
        self._streams: dict[str, int] = {}  # caller key -> open inbox streams

    def routes(self, app: web.Application) -> None:
        """On ``app``: the admin API's sub-application, mounted at /admin/api."""
        for op in OPERATIONS:
            handler = self._guarded(op, getattr(self, op.handler))
            app.router.add_route(op.method, op.path, shaped(self.access.audited(handler, op.query_keys)))

    def _guarded(self, op: Operation, handler: Callable[[web.Request, Who], Awaitable[web.StreamResponse]]) -> Handler:
        """Authenticates, checks the role and the query's parameter names, then runs the handler."""

        async def run(request: web.Request) -> web.StreamResponse:
            who = await self.access.who(request, op.role)
            unknown = set(request.query.keys()) - op.query_keys
            if unknown:
                raise ApiError(400, f"unknown query parameters: {sorted(unknown)}")
            twice = sorted(k for k in set(request.query.keys()) if len(request.query.getall(k)) > 1)
            if twice:
                raise ApiError(400, f"query parameters given more than once: {twice}")
            return await handler(request, who)

        return run

    # --- identity and health --------------------------------------------------------------------------------

    async def me(self, request: web.Request, who: Who) -> web.Response:
        p = who.caller.principal
        body: dict[str, Any] = {
            "subject": p.subject,
            "email": p.email,
            "groups": sorted(p.groups),
            "kind": p.kind,
            "issuer": who.caller.issuer,
            "roles": sorted(r.value for r in who.roles),
            "via": who.via,
        }
        if who.csrf is not None:
            body["csrf_token"] = who.csrf  # the console's own session: the page sends it back on changes
        return json_response(body)

    async def health(self, request: web.Request, who: Who) -> web.Response:
        gw = self.gw
        servers = []
        for name, cfg in gw.config.servers.items():
            breaker = gw.breaker_state(name)
            transport = "agent" if cfg.via == "agent" else ("stdio" if cfg.command else cfg.transport or "http")
            row: dict[str, Any] = {"name": name, "transport": transport, "breaker": breaker}
            if cfg.via == "agent":
                row["agents"] = len(gw.agents.live(name))
            servers.append(row)
        return json_response(
            {
                "ready": gw.writer.healthy and not gw.draining,
                "store": "ok" if gw.writer.healthy else "failing",
                "draining": gw.draining,
                "policy_version": gw.policy.version,
                "servers": servers,
                "agents": gw.agents.observed() if Role.AUDITOR in who.roles else [],
            }
        )

    # --- approvals ------------------------------------------------------------------------------------------

    async def approvals(self, request: web.Request, who: Who) -> web.Response:
        state = _state(request)
        limit = _int(request.query.get("limit"), "limit", 500, 1, 1000)
        return json_response({"approvals": await self._visible_approvals(who, state, limit)})

    async def _visible_approvals(self, who: Who, state: str | None, limit: int) -> list[dict[str, Any]]:
        c = who.caller
        rows = await asyncio.to_thread(self.gw.approvals.list_for, c.key, c.principal.groups, state, limit)
        return [_shown(r) for r in rows]

    async def approvals_stream(self, request: web.Request, who: Who) -> web.StreamResponse:
        """The inbox, live: the list is sent at once and again whenever it changes (this replica's decisions and
        new holds wake it at once; other replicas' within :data:`STREAM_POLL` seconds). A stream lasts at most
        :data:`STREAM_LIFETIME` (the browser reconnects, authenticating again) and ends within
        :data:`STREAM_RECHECK` seconds of its console session's end; a caller has at most
        :data:`STREAMS_PER_CALLER` open, the gateway :data:`STREAMS_TOTAL`."""
        state = _state(request)
        key = who.caller.key
        if self._streams.get(key, 0) >= STREAMS_PER_CALLER or sum(self._streams.values()) >= STREAMS_TOTAL:
            request["admin_refused"] = "too many open inbox streams"
            raise ApiError(429, "too many open inbox streams: close one", {"Retry-After": "5"})
        await self.access.record_open(request, frozenset({"state"}))
        self._streams[key] = self._streams.get(key, 0) + 1
        try:
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", **SECURITY_HEADERS})
            await resp.prepare(request)
            await self._stream(request, resp, who, state)
        except (ConnectionError, asyncio.CancelledError):
            raise
        except Exception:  # after the answer began nothing else can be said: end the stream, log the defect
            log.exception("the approvals stream failed")
        finally:
            self._streams[key] -= 1
            if not self._streams[key]:
                del self._streams[key]
        return resp

    async def _stream(self, request: web.Request, resp: web.StreamResponse, who: Who, state: str | None) -> None:
        loop = asyncio.get_running_loop()
        started = checked = loop.time()
        last: bytes | None = None
        quiet = 0.0
        wake = self.gw.approvals_changed
        while not self.gw.draining and loop.time() - started < STREAM_LIFETIME:
            if who.via == "console" and loop.time() - checked >= STREAM_RECHECK:
                if not await self.access.console_session_alive(request):
                    return  # signed out or expired: nothing more for this browser
                checked = loop.time()
            seen = wake.version  # before the query: a change during it wakes the next wait at once
            rows = await self._visible_approvals(who, state, 200)
            body = orjson.dumps({"approvals": rows})
            if body != last:
                await resp.write(b"event: approvals\ndata: " + body + b"\n\n")
                last, quiet = body, 0.0
            elif quiet >= STREAM_HEARTBEAT:
                await resp.write(b": keep-alive\n\n")
                quiet = 0.0
            try:
                await asyncio.wait_for(wake.wait_past(seen), STREAM_POLL)
            except TimeoutError:
                quiet += STREAM_POLL

    async def approval(self, request: web.Request, who: Who) -> web.Response:
        row = await asyncio.to_thread(self.gw.approvals.get, request.match_info["id"])
        if row is None or not _may_see(who, row):
            raise ApiError(404, "no such approval request")
        return json_response(_shown(row))

    async def approve(self, request: web.Request, who: Who) -> web.Response:
        return await self._decide(request, who, "approve")

    async def deny(self, request: web.Request, who: Who) -> web.Response:
        return await self._decide(request, who, "deny")

    async def review(self, request: web.Request, who: Who) -> web.Response:
        return await self._decide(request, who, "review")

    async def _decide(self, request: web.Request, who: Who, decision: str) -> web.Response:
        caller = who.caller
        reason, grant = _decision_body(await _json_body(request, allow_empty=True))
        approval_id = request.match_info["id"]
        seen = await asyncio.to_thread(self.gw.approvals.get, approval_id)
        if seen is None or not _may_see(who, seen):
            raise ApiError(404, "no such approval request")  # as a read answers: nothing told about others' requests
        if decision != "deny" and not who.person:
            raise ApiError(403, "only people approve or review: an API key or a service may deny, nothing more")
        voter = Voter(caller.principal.subject, caller.key, caller.record_text, caller.principal.groups)
        try:
            row = await asyncio.to_thread(self.gw.approvals.vote, approval_id, voter, decision, reason, None, grant)
        except ApprovalError as exc:
            request["admin_refused"] = exc.message[:200]
            raise ApiError(exc.status, exc.message) from None
        if row["state"] != "pending":
            self.gw.approval_decided(approval_id)
            if decision != "review":
                self.gw.notify_approval(row["state"], _shown(row))
        verb = {"approve": "approved", "deny": "denied", "review": "reviewed"}[decision]
        self.gw.record_event(
            row["server"],
            row["session_id"],
            f"approval_{verb}",
            f"{approval_id} {verb} by {caller.record_text}"
            + (" via the console" if who.via == "console" else "")
            + (f" ({row['state']})" if row["state"] != "pending" else " (more approvals needed)")
            + (f": {reason}" if reason else ""),
        )
        return json_response(_shown(row))

    async def grants(self, request: web.Request, who: Who) -> web.Response:
        everything = _flag(request.query.get("all"), "all")

        def load() -> list[dict[str, Any]]:
            now = time.time_ns()
            q = select(grants).order_by(grants.c.created_ns.desc()).limit(500)
            if not everything:
                q = q.where(grants.c.revoked_ns.is_(None), grants.c.expires_ns > now)
            with self.gw.engine.connect() as conn:
                rows = [dict(r) for r in conn.execute(q).mappings()]
            for r in rows:
                r.pop("requester_key", None)
                r["arguments"] = orjson.loads(r["arguments"]) if r["arguments"] else None
            return rows

        return json_response({"grants": await asyncio.to_thread(load)})

    # --- sessions and the trail -----------------------------------------------------------------------------

    async def sessions(self, request: web.Request, who: Who) -> web.Response:
        q = request.query
        limit = _int(q.get("limit"), "limit", 50, 1, 1000)
        try:
            before = parse_when(q.get("before"))
        except ValueError as exc:
            raise ApiError(400, f"before: {exc}") from None
        rows = await asyncio.to_thread(
            list_sessions, self.gw.engine, limit, q.get("server"), q.get("principal"), before
        )
        return json_response({"sessions": [_session_json(r) for r in rows]})

    async def session(self, request: web.Request, who: Who) -> web.Response:
        sid = request.match_info["session"]

        def load() -> tuple[dict[str, Any] | None, list[dict[str, Any]], int]:
            engine = self.gw.engine
            recs = session_records(engine, sid, limit=TIMELINE_LIMIT + 1, sealed=False)
            total = len(recs) if len(recs) <= TIMELINE_LIMIT else count_session_records(engine, sid)
            return get_session(engine, sid), recs[:TIMELINE_LIMIT], total

        row, recs, total = await asyncio.to_thread(load)
        if row is None and not recs:
            raise ApiError(404, "no such session")
        shown = await asyncio.to_thread(self._displayed, [_timeline_record(r) for r in recs])
        return json_response(
            {
                "session": None if row is None else _session_json({**row, "records": total}),
                "records": shown,
                "truncated": total > TIMELINE_LIMIT,
            }
        )

    async def session_export(self, request: web.Request, who: Who) -> web.Response:
        sid = request.match_info["session"]
        try:
            doc = await asyncio.to_thread(export_session, self.gw.engine, sid, EXPORT_LIMIT, False)
        except LookupError:
            raise ApiError(404, "no such session") from None
        except OverflowError:
            raise ApiError(
                413, f"the session has more than {EXPORT_LIMIT} records: `portcullis sessions export`"
            ) from None
        if doc.get("session") is not None:
            doc["session"] = {k: v for k, v in doc["session"].items() if k not in ("owner", "state")}
        resp = json_response(doc)
        resp.headers["Content-Disposition"] = f'attachment; filename="session-{sid[:64]}.json"'
        return resp

    async def audit_records(self, request: web.Request, who: Who) -> web.Response:
        q = request.query
        try:
            query = Query(
                principal=q.get("principal"),
                group=q.get("group"),
                server=q.get("server"),
                tool=q.get("tool"),
                method=q.get("method"),
                decision=q.get("decision"),
                kind=q.get("kind"),
                session=q.get("session"),
                since_ns=parse_when(q.get("since")),
                until_ns=parse_when(q.get("until")),
                text=q.get("text"),
                limit=_int(q.get("limit"), "limit", 100, 1, 1000),
                text_in_requests=Role.ADMIN in who.roles,
                cursor=_int(q.get("cursor"), "cursor", 0, 0, 2**63 - 1) if "cursor" in q else None,
                responses=_flag(q.get("responses"), "responses"),
            )
        except ValueError as exc:
            raise ApiError(400, f"bad query: {exc}") from None
        rows, nxt = await asyncio.to_thread(search, self.gw.engine, query)
        rows = await asyncio.to_thread(self._displayed, rows)
        return json_response({"records": rows, "next_cursor": nxt})

    def _displayed(self, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """What clients sent is recorded as sent (the record of record); the API shows it masked like responses
        (``display_masked`` says what was masked; a message that cannot be masked is not shown)."""
        for doc in docs:
            for d in (doc, doc.get("response")):
                if isinstance(d, dict) and d.get("direction") == "c2s" and isinstance(d.get("payload"), str):
                    d["payload"], d["display_masked"] = self.gw.mask_for_display(d["server"], d["payload"])
        return docs

    async def audit_exports(self, request: web.Request, who: Who) -> web.Response:
        ex = self.gw.exporter
        return json_response({"exports": ex.stats() if ex is not None else []})

    # --- policy ---------------------------------------------------------------------------------------------

    async def policy(self, request: web.Request, who: Who) -> web.Response:
        ps = self.gw.policy.policy
        return json_response(
            {
                "version": ps.version,
                "source": ps.source,
                "default": ps.default,
                "rules": [S.rule_json(r) for r in ps.rules],
                "defaults": [S.rule_json(r) for r in ps.defaults],
                "problems": list(self.gw.policy.last_problems),
            }
        )

    async def dry_run(self, request: web.Request, who: Who) -> web.Response:
        body = await _json_body(request)
        try:
            req = _policy_request(body, self.gw)
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
        ex = self.gw.policy.engine.explain(req)
        return json_response(explain_json(ex))

    async def permissions(self, request: web.Request, who: Who) -> web.Response:
        q = request.query
        subject, email = q.get("subject") or None, q.get("email") or None
        groups = frozenset(g.strip() for g in (q.get("groups") or "").split(",") if g.strip())
        if subject is None and email is None and not groups:
            principal = who.caller.principal  # "what may I call?"
        else:
            if Role.AUDITOR not in who.roles:
                request["admin_refused"] = "not auditor"
                raise ApiError(403, "only auditors may ask about another principal's permissions")
            # no subject: anyone with these groups ("what may members of oncall call?")
            principal = Principal(subject=subject or "(anyone)", email=email, groups=groups)
        known = await asyncio.to_thread(self._known_items)
        result = effective_permissions(self.gw.policy.engine, principal, list(self.gw.config.servers), known)
        if Role.AUDITOR not in who.roles:
            result = for_caller(result)  # what tools/list would show them: no denied items, no rule text
        return json_response(result)

    def _known_items(self) -> dict[str, dict[str, list[str]]]:
        """Per server and kind, the item names the gateway has seen (the definitions it pins) and those the
        policy's rules name exactly."""
        from portcullis.store.definitions import load_rows

        out: dict[str, dict[str, set[str]]] = {}
        for r in load_rows(self.gw.engine):
            out.setdefault(r["server"], {}).setdefault(r["kind"], set()).add(r["name"])
        for server in self.gw.config.servers:
            for kind, names in named_items(self.gw.policy.policy, server).items():
                out.setdefault(server, {}).setdefault(kind, set()).update(names)
        return {s: {k: sorted(v) for k, v in kinds.items()} for s, kinds in out.items()}

    # --- agents and keys ------------------------------------------------------------------------------------

    async def agents(self, request: web.Request, who: Who) -> web.Response:
        tokens = await asyncio.to_thread(agent_tokens.load_all, self.gw.engine)
        live = {a["agent"]: a for a in self.gw.agents.observed()}
        names = sorted({t.name for t in tokens} | set(live))
        out = []
        for name in names:
            mine = [t for t in tokens if t.name == name]
            servers = sorted({s for t in mine for s in t.servers})
            figures = live.get(name, {})
            out.append(
                {
                    "name": name,
                    "servers": servers,
                    "tokens": len([t for t in mine if t.usable()]),
                    "connections": int(figures.get("connections", 0)),
                    "figures": {k: v for k, v in figures.items() if k not in ("agent", "connections")},
                }
            )
        return json_response({"agents": out})

    async def agent_tokens(self, request: web.Request, who: Who) -> web.Response:
        tokens = await asyncio.to_thread(agent_tokens.load_all, self.gw.engine)
        return json_response({"agent_tokens": [S.agent_token_json(t) for t in tokens]})

    async def agent_token_create(self, request: web.Request, who: Who) -> web.Response:
        body = await _json_body(request)
        name, servers, ttl = body.get("name"), body.get("servers"), body.get("ttl_seconds")
        _check_fields(body, {"name", "servers", "ttl_seconds"})
        if not isinstance(name, str) or not S.NAME.match(name):
            raise ApiError(400, "name: expected 1-64 letters, digits, '.', '_' or '-'")
        if not isinstance(servers, list) or not servers or not all(isinstance(s, str) for s in servers):
            raise ApiError(400, "servers: expected a non-empty list of server names")
        unknown = [s for s in servers if s not in self.gw.config.servers]
        if unknown:
            raise ApiError(400, f"servers: not configured: {unknown}")
        ttl = _ttl(ttl)
        tok, secret = await asyncio.to_thread(agent_tokens.create, self.gw.engine, name, servers, ttl)
        return json_response({**S.agent_token_json(tok), "token": secret}, status=201)

    async def agent_token_revoke(self, request: web.Request, who: Who) -> web.Response:
        ok = await asyncio.to_thread(agent_tokens.revoke, self.gw.engine, request.match_info["id"])
        if not ok:
            raise ApiError(404, "no such live agent token")
        return json_response({"id": request.match_info["id"], "revoked": True})

    async def api_keys(self, request: web.Request, who: Who) -> web.Response:
        keys = await asyncio.to_thread(apikeys.load_all, self.gw.engine)
        return json_response({"api_keys": [S.api_key_json(k) for k in keys.values()]})

    async def api_key_create(self, request: web.Request, who: Who) -> web.Response:
        body = await _json_body(request)
        _check_fields(body, {"name", "owner", "groups", "ttl_seconds"})
        name, owner, groups = body.get("name"), body.get("owner"), body.get("groups", [])
        if not isinstance(name, str) or not S.NAME.match(name):
            raise ApiError(400, "name: expected 1-64 letters, digits, '.', '_' or '-'")
        if not isinstance(owner, str) or not 0 < len(owner) <= 200:
            raise ApiError(400, "owner: expected who answers for the key (1-200 characters)")
        if not isinstance(groups, list) or not all(isinstance(g, str) and 0 < len(g) <= 200 for g in groups):
            raise ApiError(400, "groups: expected a list of group names")
        ttl = _ttl(body.get("ttl_seconds"))
        if set(groups) & set(self.gw.config.admin.admin_groups):
            raise ApiError(400, "groups: an API key cannot carry admin.admin_groups (admin rights are for people)")
        key, secret = await asyncio.to_thread(apikeys.create, self.gw.engine, name, owner, groups, ttl)
        await self.gw.reload_api_keys()
        return json_response({**S.api_key_json(key), "token": secret}, status=201)

    async def api_key_revoke(self, request: web.Request, who: Who) -> web.Response:
        ok = await asyncio.to_thread(apikeys.revoke, self.gw.engine, request.match_info["id"])
        if not ok:
            raise ApiError(404, "no such live API key")
        await self.gw.reload_api_keys()  # refused on this replica at once; the others within auth.api_key_refresh
        return json_response({"id": request.match_info["id"], "revoked": True})


# --- helpers ------------------------------------------------------------------------------------------------


def _may_see(who: Who, row: dict[str, Any]) -> bool:
    return bool(set(row["approvers"]) & who.caller.principal.groups) or row.get("requester_key") == who.caller.key


def _shown(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k != "requester_key"}


def _session_json(row: dict[str, Any]) -> dict[str, Any]:
    out = {k: row.get(k) for k in ("id", "server", "era", "protocol_version", "created_ns", "ended_ns", "end_reason")}
    out["records"] = int(row.get("records") or 0)
    owner = row.get("owner")
    out["subject"] = owner.split("|", 1)[1] if isinstance(owner, str) and "|" in owner else None  # "issuer|subject"
    for k in ("client_info", "principal"):
        raw = row.get(k)
        try:
            out[k] = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            out[k] = raw
    return out


def _timeline_record(row: dict[str, Any]) -> dict[str, Any]:
    doc = record_json({**row, "sealed": None})
    del doc["sealed_b64"]  # the sealed original (unmasked) never leaves through the API
    doc["sealed"] = row.get("sealed") is not None
    return doc


def _state(request: web.Request) -> str | None:
    state = request.query.get("state")
    if state is not None and state not in STATES:
        raise ApiError(400, f"state must be one of {', '.join(STATES)}")
    return state


def _flag(value: str | None, name: str) -> bool:
    if value is None or value.lower() in ("0", "false", "no"):
        return False
    if value.lower() in ("1", "true", "yes"):
        return True
    raise ApiError(400, f"{name} must be true or false")


def _int(value: str | None, name: str, default: int, lo: int, hi: int) -> int:
    if value is None:
        return default
    try:
        n = int(value)
    except ValueError:
        raise ApiError(400, f"{name} must be an integer") from None
    if not lo <= n <= hi:
        raise ApiError(400, f"{name} must be between {lo} and {hi}")
    return n


def _ttl(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():  # JSON has one number type: 60.0 is the integer 60
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not 60 <= value <= 366 * 86400:
        raise ApiError(400, "ttl_seconds: expected an integer from 60 to 31622400, or null (no expiry)")
    return value


def _check_fields(body: dict[str, Any], allowed: set[str]) -> None:
    extra = sorted(set(body) - allowed)
    if extra:
        raise ApiError(400, f"unknown fields: {extra[:10]}")


async def _json_body(request: web.Request, allow_empty: bool = False) -> dict[str, Any]:
    ctype = request.headers.get("Content-Type", "")
    if (request.content_length or 0) > MAX_BODY:
        raise ApiError(413, f"the body is larger than {MAX_BODY} bytes")
    raw = bytearray()
    while len(raw) <= MAX_BODY:  # the whole body, however it arrives, up to one byte past the limit
        chunk = await request.content.read(MAX_BODY + 1 - len(raw))
        if not chunk:
            break
        raw += chunk
    if len(raw) > MAX_BODY:
        raise ApiError(413, f"the body is larger than {MAX_BODY} bytes")
    if not raw:
        if allow_empty:
            return {}
        raise ApiError(400, "a JSON object body is required")
    if ctype and not ctype.startswith("application/json"):
        raise ApiError(415, "the body must be application/json")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ApiError(400, "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object")
    return body


def _decision_body(body: dict[str, Any]) -> tuple[str | None, dict[str, Any] | None]:
    """``{"reason": "...", "grant": {"minutes": N, "arguments": {...} | null}}``, both optional."""
    _check_fields(body, {"reason", "grant"})
    reason = body.get("reason")
    if reason is not None and not isinstance(reason, str):
        raise ApiError(400, "reason: expected a string")
    reason = reason or None
    if reason is not None and len(reason) > MAX_REASON:
        raise ApiError(400, f"reason longer than {MAX_REASON} characters")
    grant = body.get("grant")
    if grant is not None and not isinstance(grant, dict):
        raise ApiError(400, 'grant: expected {"minutes": N, "arguments": {...} | null}')
    return reason, grant


def _policy_request(body: dict[str, Any], gw: Gateway) -> PolicyRequest:
    extra = set(body) - {"principal", "server", "method", "target", "arguments", "annotations"}
    if extra:
        raise ValueError(f"unknown fields: {sorted(extra)[:10]}")
    p = body.get("principal")
    if not isinstance(p, dict) or not isinstance(p.get("subject"), str) or not p["subject"]:
        raise ValueError('principal: expected {"subject": "...", "groups": [...], "email": ..., "client_id": ...}')
    if set(p) - {"subject", "groups", "email", "client_id", "kind"}:
        raise ValueError("principal: unknown fields")
    groups = p.get("groups", [])
    if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
        raise ValueError("principal.groups: expected a list of strings")
    for k in ("email", "client_id", "kind"):
        if p.get(k) is not None and not isinstance(p[k], str):
            raise ValueError(f"principal.{k}: expected a string")
    server = body.get("server")
    if not isinstance(server, str) or not server:
        raise ValueError("server: expected a server name")
    method = body.get("method", "tools/call")
    target = body.get("target")
    if not isinstance(method, str) or (target is not None and not isinstance(target, str)):
        raise ValueError("method and target: expected strings")
    arguments = body.get("arguments", {})
    annotations = body.get("annotations")
    if not isinstance(arguments, dict) or (annotations is not None and not isinstance(annotations, dict)):
        raise ValueError("arguments and annotations: expected objects")
    principal = Principal(
        subject=p["subject"],
        email=p.get("email"),
        groups=frozenset(groups),
        client_id=p.get("client_id"),
        kind=p.get("kind") or "user",
    )
    return PolicyRequest(principal, server, method, target, arguments, annotations)


__all__ = ["OPERATIONS", "AdminApi", "Operation", "Param", "caller_doc"]
