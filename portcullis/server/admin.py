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
from typing import Any

import orjson
from aiohttp import web

from portcullis.approvals.book import ApprovalError, Voter
from portcullis.approvals.model import STATES
from portcullis.identity.edge import Caller
from portcullis.identity.tokens import AuthError
from portcullis.server.gateway import Gateway

MAX_REASON = 2000


class AdminApi:
    def __init__(self, gw: Gateway) -> None:
        self.gw = gw

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/admin/approvals", self.list)
        app.router.add_get("/admin/approvals/{id}", self.show)
        app.router.add_post("/admin/approvals/{id}/approve", self.approve)
        app.router.add_post("/admin/approvals/{id}/deny", self.deny)
        app.router.add_post("/admin/approvals/{id}/review", self.review)

    async def _caller(self, request: web.Request) -> Caller:
        if not self.gw.auth.enabled:
            raise _error(403, "approvals need authenticated approvers: the gateway runs with auth.mode none")
        try:
            return await self.gw.auth.authenticate(request.headers, [self.gw.public_base])
        except AuthError as exc:
            raise _error(exc.status, exc.description, {"WWW-Authenticate": f'Bearer error="{exc.error}"'}) from None

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
