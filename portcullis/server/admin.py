"""The admin REST API: approvals (list, show, approve, deny, review) and the audit trail (search, exports).

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

The audit trail, for members of ``admin.auditor_groups`` only (everyone else 403; nobody when the list is empty):

- ``GET /admin/audit/records?principal=&group=&server=&tool=&method=&decision=&kind=&session=&since=&until=&text=``
  ``&limit=&cursor=&responses=`` — :mod:`portcullis.audit.search` (``{"records": [...], "next_cursor": N | null}``);
- ``GET /admin/audit/exports`` — the audit exports' counters (``{"exports": [...]}``).

Every admin API request — also one that fails authentication — is itself a record of kind ``admin_access`` on this
gateway's chain: method, route (with the approval id), the query's known parameter names (never their values, nor
unknown names), the answer's status, why it was refused, and the caller (in ``principal`` too, so the access is found
by principal and group). No header and no token is ever recorded. The record is committed before the answer is sent
(durability ``commit``): trail data is not served unrecorded.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from portcullis.approvals.book import ApprovalError, Voter
from portcullis.approvals.model import STATES
from portcullis.audit.search import Query, parse_when, search
from portcullis.errors import StoreError
from portcullis.flow import Record
from portcullis.identity.edge import Caller
from portcullis.identity.tokens import AuthError
from portcullis.pipeline.record import event_record
from portcullis.server.gateway import Gateway

MAX_REASON = 2000
QUERY_KEYS = frozenset(
    {"principal", "group", "server", "tool", "method", "decision", "kind", "session", "since", "until", "text"}
    | {"limit", "cursor", "responses"}
)
APPROVAL_ID = re.compile(r"^apr_[A-Za-z0-9_-]{16}$")  # approvals.model.new_id
log = logging.getLogger("portcullis.admin")
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
        """Every admin API request goes into the trail before its answer is sent (``admin_access``)."""

        async def run(request: web.Request) -> web.StreamResponse:
            try:
                resp = await handler(request)
            except web.HTTPException as exc:
                await self._record_access(request, exc.status)
                raise
            except BaseException:
                self._record_access_later(request, 500)
                raise
            if not await self._record_access(request, resp.status) and request.method == "GET":
                raise _error(503, "the audit trail cannot be written: try again")  # nothing read goes out unrecorded
            return resp

        return run

    def _access_record(self, request: web.Request, status: int) -> Record:
        caller: Caller | None = request.get("admin_caller")
        detail = f"{request.method} {_recorded_target(request)} -> {status}"
        detail += f" by {caller.record_text}" if caller is not None else " by unauthenticated"
        refused = request.get("admin_refused")
        if refused is not None:
            detail += f": {refused[:200]}"
        return event_record("-", None, "admin_access", detail, principal=None if caller is None else caller.record_text)

    async def _record_access(self, request: web.Request, status: int) -> bool:
        try:
            await self.gw.commit([self._access_record(request, status)])
        except StoreError:
            log.warning("admin API access not recorded: the store is unavailable")
            return False
        return True

    def _record_access_later(self, request: web.Request, status: int) -> None:
        self.gw.submit([self._access_record(request, status)])

    async def _caller(self, request: web.Request) -> Caller:
        if not self.gw.auth.enabled:
            request["admin_refused"] = "auth.mode none"
            raise _error(403, "the admin API needs authenticated callers: the gateway runs with auth.mode none")
        try:
            caller = await self.gw.auth.authenticate(request.headers, [self.gw.public_base])
        except AuthError as exc:
            request["admin_refused"] = f"{exc.error}: {exc.description}"  # what the caller is told; never the token
            raise _error(exc.status, exc.description, {"WWW-Authenticate": f'Bearer error="{exc.error}"'}) from None
        request["admin_caller"] = caller
        return caller

    async def _auditor(self, request: web.Request) -> Caller:
        caller = await self._caller(request)
        if not set(self.gw.config.admin.auditor_groups) & caller.principal.groups:
            request["admin_refused"] = "not in admin.auditor_groups"
            raise _error(403, "only members of admin.auditor_groups may read the audit trail")
        return caller

    async def records(self, request: web.Request) -> web.Response:
        """``GET /admin/audit/records``: the search of ``portcullis audit search`` (same parameters; since/until in
        RFC 3339 or as a duration back from now)."""
        await self._auditor(request)
        q = request.query
        unknown = set(q.keys()) - QUERY_KEYS
        if unknown:
            raise _error(400, f"unknown query parameters: {sorted(unknown)}")
        twice = sorted(k for k in set(q.keys()) if len(q.getall(k)) > 1)
        if twice:
            raise _error(400, f"query parameters given more than once: {twice}")
        try:
            limit = int(q.get("limit", "100"))
            cursor = int(q["cursor"]) if "cursor" in q else None
            responses = _flag(q.get("responses"))
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
                responses=responses,
            )
        except ValueError as exc:
            raise _error(400, f"bad query: {exc}") from None
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


def _recorded_target(request: web.Request) -> str:
    """The route and the query's parameter names as an ``admin_access`` record names them. Only what the gateway
    knows the shape of is copied from the request — an approval id, the known parameter names — so that nothing a
    caller puts into the URL (a token pasted into the path or the query) reaches the trail."""
    resource = request.match_info.route.resource
    path = resource.canonical if resource is not None else "?"
    approval_id = request.match_info.get("id")
    if approval_id is not None and APPROVAL_ID.match(approval_id):
        path = path.replace("{id}", approval_id)
    names = set(request.query.keys())
    keys = sorted(names & QUERY_KEYS)
    if names - QUERY_KEYS:
        keys.append(f"+{len(names - QUERY_KEYS)} unknown")
    return path + ("?" + ",".join(keys) if keys else "")


def _flag(value: str | None) -> bool:
    if value is None or value.lower() in ("0", "false", "no", ""):
        return False
    if value.lower() in ("1", "true", "yes"):
        return True
    raise ValueError("responses must be true or false")


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
    cls = {
        400: web.HTTPBadRequest,
        401: web.HTTPUnauthorized,
        403: web.HTTPForbidden,
        404: web.HTTPNotFound,
        503: web.HTTPServiceUnavailable,
    }.get(status, web.HTTPConflict)
    return cls(body=orjson.dumps({"error": message}), content_type="application/json", headers=headers)
