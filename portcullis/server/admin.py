"""The admin REST API for approvals: list, show, approve, deny.

Authenticated exactly like the MCP endpoints (bearer token from a trusted issuer, or an API key); the token's
audience may be the gateway's base URL. What a caller may see and do:

- ``GET /admin/approvals[?state=pending]`` — the requests the caller asked for or may decide;
- ``GET /admin/approvals/{id}`` — one request with its votes (requester or approver only);
- ``POST /admin/approvals/{id}/approve`` and ``/deny`` with ``{"reason": "..."}`` — approver groups only, never the
  requester; an approval may add ``"grant": {"minutes": N, "arguments": {"name": "glob"} | null}`` (time-boxed access
  for calls like this one);
- ``POST /admin/approvals/{id}/review`` — an approver's follow-up review of a break-glass call.

Answers: 200 with the request, 400 bad body, 401 unauthenticated, 403 not allowed (self-approval, not an approver),
404 unknown, 409 already decided or expired.

Every decision is recorded with the session of the held call (kind ``approval_approved`` / ``approval_denied``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from portcullis.approvals.book import ApprovalError, Voter
from portcullis.approvals.model import STATES
from portcullis.audit.search import Query, parse_when, search
from portcullis.identity.edge import Caller
from portcullis.identity.tokens import AuthError
from portcullis.server.gateway import Gateway

MAX_REASON = 2000
QUERY_KEYS = frozenset(
    {"principal", "group", "server", "tool", "method", "decision", "kind", "session", "since", "until", "text"}
    | {"limit", "cursor"}
)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class AdminApi:
    def __init__(self, gw: Gateway) -> None:
        self.gw = gw

    def routes(self, app: web.Application) -> None:
        audited = self._audited
        app.router.add_get("/admin/approvals", audited(self.list))
        app.router.add_get("/admin/approvals/{id}", audited(self.show))
        app.router.add_post("/admin/approvals/{id}/approve", audited(self.approve))
        app.router.add_post("/admin/approvals/{id}/deny", audited(self.deny))
        app.router.add_post("/admin/approvals/{id}/review", audited(self.review))
        app.router.add_get("/admin/audit/records", audited(self.records))
        app.router.add_get("/admin/audit/exports", audited(self.exports))

    def _audited(self, handler: Handler) -> Handler:
        """Every admin API request goes into the trail (``admin_access``): who, which route, the query's keys (never
        its values, nor any header), the answer's status — also when authentication fails."""

        async def run(request: web.Request) -> web.StreamResponse:
            status = 500
            try:
                resp = await handler(request)
                status = resp.status
                return resp
            except web.HTTPException as exc:
                status = exc.status
                raise
            finally:
                caller: Caller | None = request.get("admin_caller")
                who = caller.record_text if caller is not None else "unauthenticated"
                keys = ",".join(sorted(request.query.keys()))
                route = request.match_info.route.resource.canonical if request.match_info.route.resource else "?"
                self.gw.record_event(
                    "-",
                    None,
                    "admin_access",
                    f"{request.method} {route}{'?' + keys if keys else ''} -> {status} by {who}",
                )

        return run

    async def _caller(self, request: web.Request) -> Caller:
        if not self.gw.auth.enabled:
            raise _error(403, "the admin API needs authenticated callers: the gateway runs with auth.mode none")
        try:
            caller = await self.gw.auth.authenticate(request.headers, [self.gw.public_base])
        except AuthError as exc:
            raise _error(exc.status, exc.description, {"WWW-Authenticate": f'Bearer error="{exc.error}"'}) from None
        request["admin_caller"] = caller
        return caller

    async def _auditor(self, request: web.Request) -> Caller:
        caller = await self._caller(request)
        if not set(self.gw.config.admin.auditor_groups) & caller.principal.groups:
            raise _error(403, "only members of admin.auditor_groups may read the audit trail")
        return caller

    async def records(self, request: web.Request) -> web.Response:
        """``GET /admin/audit/records``: the search of ``portcullis audit search`` (same parameters; since/until in
        RFC 3339 or as a duration back from now)."""
        await self._auditor(request)
        q = request.query
        try:
            limit = int(q.get("limit", "100"))
            cursor = int(q["cursor"]) if "cursor" in q else None
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
                limit=limit,
                cursor=cursor,
            )
        except ValueError as exc:
            raise _error(400, f"bad query: {exc}") from None
        unknown = set(q.keys()) - QUERY_KEYS
        if unknown:
            raise _error(400, f"unknown query parameters: {sorted(unknown)}")
        rows, nxt = await asyncio.to_thread(search, self.gw.engine, query)
        return _json({"records": rows, "next_cursor": nxt})

    async def exports(self, request: web.Request) -> web.Response:
        await self._auditor(request)
        ex = self.gw.exporter
        return _json({"exports": ex.stats() if ex is not None else []})

    async def list(self, request: web.Request) -> web.Response:
        caller = await self._caller(request)
        state = request.query.get("state")
        if state is not None and state not in STATES:
            raise _error(400, f"state must be one of {', '.join(STATES)}")
        rows = await asyncio.to_thread(self.gw.approvals.list, state, 500)
        return _json({"approvals": [_shown(r) for r in rows if _may_see(caller, r)]})

    async def show(self, request: web.Request) -> web.Response:
        caller = await self._caller(request)
        row = await asyncio.to_thread(self.gw.approvals.get, request.match_info["id"])
        if row is None or not _may_see(caller, row):
            raise _error(404, f"no approval request {request.match_info['id']}")
        return _json(_shown(row))

    async def approve(self, request: web.Request) -> web.Response:
        return await self._decide(request, "approve")

    async def deny(self, request: web.Request) -> web.Response:
        return await self._decide(request, "deny")

    async def review(self, request: web.Request) -> web.Response:
        return await self._decide(request, "review")

    async def _decide(self, request: web.Request, decision: str) -> web.Response:
        caller = await self._caller(request)
        reason, grant = await _body(request)
        approval_id = request.match_info["id"]
        if decision != "deny" and caller.principal.kind == "apikey":
            raise _error(403, "an API key may deny but not approve or review: approvals are made by people")
        voter = Voter(caller.principal.subject, caller.key, caller.record_text, caller.principal.groups)
        try:
            row = await asyncio.to_thread(self.gw.approvals.vote, approval_id, voter, decision, reason, None, grant)
        except ApprovalError as exc:
            raise _error(exc.status, exc.message) from None
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
            + (f" ({row['state']})" if row["state"] != "pending" else " (more approvals needed)")
            + (f": {reason}" if reason else ""),
        )
        return _json(_shown(row))


def _may_see(caller: Caller, row: dict[str, Any]) -> bool:
    return bool(set(row["approvers"]) & caller.principal.groups) or row["requester_key"] == caller.key


def _shown(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k != "requester_key"}


async def _body(request: web.Request) -> tuple[str | None, dict[str, Any] | None]:
    """``{"reason": "...", "grant": {"minutes": N, "arguments": {...} | null}}``, both optional."""
    raw = await request.read()
    if not raw:
        return None, None
    shape = 'the body must be JSON: {"reason": "...", "grant": {"minutes": N, "arguments": {...}}}'
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise _error(400, shape) from None
    if not isinstance(body, dict) or not isinstance(body.get("reason", ""), str) or set(body) - {"reason", "grant"}:
        raise _error(400, shape)
    reason = body.get("reason") or None
    if reason is not None and len(reason) > MAX_REASON:
        raise _error(400, f"reason longer than {MAX_REASON} characters")
    grant = body.get("grant")
    if grant is not None and not isinstance(grant, dict):
        raise _error(400, shape)
    return reason, grant


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.HTTPException:
    cls = {400: web.HTTPBadRequest, 401: web.HTTPUnauthorized, 403: web.HTTPForbidden, 404: web.HTTPNotFound}.get(
        status, web.HTTPConflict
    )
    return cls(body=orjson.dumps({"error": message}), content_type="application/json", headers=headers)
