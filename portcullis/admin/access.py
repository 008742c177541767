"""Who is calling the admin API, what they may do, and the trail of every call.

A caller is authenticated by either

- a bearer token (``Authorization: Bearer …``: an access token from a trusted issuer whose audience is the gateway's
  base URL, or an API key), exactly as on the MCP endpoints — for scripts; or
- the web console's session cookie (:data:`COOKIE`, HttpOnly, Secure, SameSite=Strict), set at login through the
  identity provider (portcullis/admin/console.py). A request that changes anything (any method but GET/HEAD) with the
  cookie must also carry the session's CSRF token in ``X-CSRF-Token`` and, when the browser sends one, an ``Origin``
  equal to the gateway's own: a page elsewhere can make the browser send the cookie, never the token.

Roles come from groups (``admin`` config): **auditor** (``auditor_groups``: read sessions, the trail, policies,
agents, keys), **admin** (``admin_groups``: everything an auditor may, and create/revoke keys and agent tokens) and
**approver** (a member of a group some hold rule names as approvers: decides the requests whose rule names one of
its groups — the approval book checks that per request, and never lets requesters decide their own).

Every request — also one refused before authentication — becomes an ``admin_access`` record on this gateway's chain,
committed before the answer is sent: method, route (with identifiers only when they have the shape the gateway
mints), the query's known parameter names (never their values), the status, why it was refused and who called.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from aiohttp import web
from yarl import URL

from portcullis.admin.http import UNROUTED, ApiError
from portcullis.errors import StoreError
from portcullis.flow import Record
from portcullis.identity.edge import Caller
from portcullis.identity.tokens import AuthError
from portcullis.pipeline.record import event_record
from portcullis.policy.model import Principal
from portcullis.server.gateway import Gateway
from portcullis.store import console_sessions

log = logging.getLogger("portcullis.admin")

COOKIE = "__Host-portcullis-console"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# path parameters recorded as they are, when they have the shape the gateway gives them (anything else: "{name}")
RECORDED_PARAMS: dict[str, re.Pattern[str]] = {  # whole-value matches (fullmatch) of what the gateway mints
    "id": re.compile(r"apr_[A-Za-z0-9_-]{16}|[0-9a-f]{12}"),  # approval ids; API-key and agent-token ids
    "session": re.compile(r"[A-Za-z0-9_-]{32}"),  # secrets.token_urlsafe(24); a key or a cookie never has 32
}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
UNAUTH_RATE = 5.0  # refused unauthenticated requests recorded one by one, per second and client address
UNAUTH_BURST = 20
UNAUTH_SUMMARY = 10.0  # seconds between summary records of the others


class Role(StrEnum):
    AUDITOR = "auditor"
    APPROVER = "approver"
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class Who:
    """The authenticated caller of one admin request, how it came, and its roles."""

    caller: Caller
    roles: frozenset[Role]
    via: str  # "bearer" | "console"
    csrf: str | None = None  # the console session's CSRF token (console callers only)

    @property
    def person(self) -> bool:
        """A person (an OIDC user), not an API key or a service (client credentials): only people approve."""
        return self.caller.principal.kind == "user"


def roles_of(gw: Gateway, groups: frozenset[str], kind: str = "user") -> frozenset[Role]:
    """Roles from groups. The admin role is for people only: an API key or a service in an admin group is an
    auditor (a key cannot outlive the person who made it with admin rights)."""
    cfg = gw.config.admin
    out: set[Role] = set()
    if groups & set(cfg.admin_groups):
        out |= {Role.ADMIN, Role.AUDITOR} if kind == "user" else {Role.AUDITOR}
    if groups & set(cfg.auditor_groups):
        out.add(Role.AUDITOR)
    approvers = {g for r in gw.policy.policy.all_rules() for g in r.approvers}
    if groups & approvers:
        out.add(Role.APPROVER)
    return frozenset(out)


def caller_doc(caller: Caller) -> dict[str, Any]:
    p = caller.principal
    return {
        "sub": p.subject,
        "email": p.email,
        "groups": sorted(p.groups),
        "client_id": p.client_id,
        "iss": caller.issuer,
        "kind": p.kind,
        "scopes": sorted(caller.scopes),
    }


def caller_from_doc(doc: dict[str, Any]) -> Caller:
    principal = Principal(
        subject=str(doc["sub"]),
        email=doc.get("email"),
        groups=frozenset(doc.get("groups") or ()),
        client_id=doc.get("client_id"),
        kind=str(doc.get("kind") or "user"),
    )
    return Caller.of(principal, doc.get("iss"), frozenset(doc.get("scopes") or ()))


class Access:
    """Authentication, roles, CSRF and the ``admin_access`` trail for the admin API and the console."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self._unauth: dict[str, tuple[float, float, int, float]] = {}  # peer -> tokens, at, dropped, since

    # --- who ------------------------------------------------------------------------------------------------

    async def who(self, request: web.Request, role: Role | None = None) -> Who:
        """The caller, or an :class:`ApiError` (401 unauthenticated, 403 CSRF or a missing role)."""
        found: Who | None = request.get("admin_who")
        who = found if found is not None else await self._authenticate(request)
        request["admin_who"] = who
        request["admin_caller"] = who.caller
        if role is not None and role not in who.roles:
            request["admin_refused"] = f"not {role.value}"
            raise ApiError(403, f"this needs the {role.value} role ({_role_config(role)})")
        return who

    async def _authenticate(self, request: web.Request) -> Who:
        gw = self.gw
        if not gw.auth.enabled:
            request["admin_refused"] = "auth.mode none"
            raise ApiError(403, "the admin API needs authenticated callers: the gateway runs with auth.mode none")
        if "Authorization" in request.headers:
            try:
                caller = await gw.auth.authenticate(request.headers, [gw.public_base])
            except AuthError as exc:
                request["admin_refused"] = f"{exc.error}: {exc.description}"  # what the caller is told; no token
                raise ApiError(
                    exc.status, exc.description, {"WWW-Authenticate": f'Bearer error="{exc.error}"'}
                ) from None
            return Who(caller, roles_of(gw, caller.principal.groups, caller.principal.kind), "bearer")
        secret = request.cookies.get(COOKIE)
        if secret:
            try:
                session = await asyncio.to_thread(console_sessions.load, gw.engine, secret)
            except StoreError:
                raise ApiError(503, "the store is unavailable: try again") from None
            except Exception:
                log.exception("console session lookup failed")
                raise ApiError(503, "the store is unavailable: try again") from None
            if session is None:
                request["admin_refused"] = "console session unknown or expired"
                raise ApiError(401, "the console session has ended: sign in again")
            caller = caller_from_doc(session.caller)
            request["admin_caller"] = caller
            if request.method not in SAFE_METHODS:
                self._check_csrf(request, session.csrf)
            return Who(caller, roles_of(gw, caller.principal.groups, caller.principal.kind), "console", session.csrf)
        request["admin_refused"] = "invalid_request: no bearer token or console session"
        raise ApiError(
            401, "no bearer token or console session", {"WWW-Authenticate": 'Bearer error="invalid_request"'}
        )

    async def console_session_alive(self, request: web.Request) -> bool:
        """Whether the console session of this request still lives (not signed out, not expired)."""
        secret = request.cookies.get(COOKIE)
        if not secret:
            return False
        try:
            return await asyncio.to_thread(console_sessions.load, self.gw.engine, secret) is not None
        except Exception:
            return False

    def _check_csrf(self, request: web.Request, expected: str) -> None:
        sent = request.headers.get(CSRF_HEADER, "")
        if not sent or not hmac.compare_digest(sent.encode(), expected.encode()):
            request["admin_refused"] = "CSRF token missing or wrong"
            raise ApiError(403, f"a console request that changes something needs the session's {CSRF_HEADER}")
        origin = request.headers.get("Origin")
        if origin is not None and _origin(origin) != _origin(self.gw.public_base):
            request["admin_refused"] = "cross-origin"
            raise ApiError(403, "cross-origin requests are refused")

    # --- the trail ------------------------------------------------------------------------------------------

    def audited(self, handler: Handler, query_keys: frozenset[str] = frozenset()) -> Handler:
        """Every admin request goes into the trail before its answer is sent (``admin_access``). A read whose
        record cannot be written is not answered (503): trail data is not served unrecorded."""

        async def run(request: web.Request) -> web.StreamResponse:
            try:
                resp = await handler(request)
            except web.HTTPException as exc:
                if request.get("admin_caller") is None and not self._unauthenticated_budget(request):
                    raise  # a flood of refused strangers: counted into one summary record, not one write each
                await self._record(request, exc.status, query_keys)
                raise
            except asyncio.CancelledError:
                self._record_later(request, 499, query_keys)
                raise
            except Exception:
                self._record_later(request, 500, query_keys)
                raise
            if resp.prepared:  # a stream (server-sent events): recorded when it opened, in the handler
                return resp
            if not await self._record(request, resp.status, query_keys) and request.method in SAFE_METHODS:
                raise ApiError(503, "the audit trail cannot be written: try again")
            return resp

        return run

    def _unauthenticated_budget(self, request: web.Request) -> bool:
        """Whether this refused, unauthenticated request gets its own record: up to :data:`UNAUTH_BURST` at once and
        :data:`UNAUTH_RATE` a second per client address; the rest are counted and said in one ``admin_access``
        record per address and :data:`UNAUTH_SUMMARY` seconds."""
        peer = request.remote or "?"
        now = time.monotonic()
        tokens, at, dropped, since = self._unauth.get(peer, (float(UNAUTH_BURST), now, 0, now))
        tokens = min(float(UNAUTH_BURST), tokens + (now - at) * UNAUTH_RATE)
        recorded = tokens >= 1.0
        if recorded:
            tokens -= 1.0
        else:
            dropped += 1
        if dropped and now - since >= UNAUTH_SUMMARY:
            self.gw.submit(
                [
                    event_record(
                        "-",
                        None,
                        "admin_access",
                        f"{dropped} unauthenticated admin requests from {peer[:64]} refused and not recorded one by "
                        f"one in the last {now - since:.0f} s (more than {UNAUTH_RATE:g}/s)",
                    )
                ]
            )
            dropped = 0
        if not dropped:
            since = now  # the window of the next summary starts with its first unrecorded request
        self._unauth[peer] = (tokens, now, dropped, since)
        if len(self._unauth) > 10_000:
            self._unauth.pop(next(iter(self._unauth)))
        return recorded

    def access_record(self, request: web.Request, status: int, query_keys: frozenset[str]) -> Record:
        caller: Caller | None = request.get("admin_caller")
        who: Who | None = request.get("admin_who")
        detail = f"{request.method} {recorded_target(request, query_keys)} -> {status}"
        detail += f" by {caller.record_text}" if caller is not None else " by unauthenticated"
        if who is not None and who.via == "console":
            detail += " (console)"
        refused = request.get("admin_refused")
        if refused is not None:
            detail += f": {refused[:200]}"
        return event_record("-", None, "admin_access", detail, principal=None if caller is None else caller.record_text)

    async def _record(self, request: web.Request, status: int, query_keys: frozenset[str]) -> bool:
        try:
            await self.gw.commit([self.access_record(request, status, query_keys)])
        except StoreError:
            log.warning("admin API access not recorded: the store is unavailable")
            return False
        return True

    async def record_unrouted(self, request: web.Request, status: int) -> bool:
        """A request under /admin/api or /ui that matched no route (404, 405): recorded as ``(unrouted)`` (within
        the budget for unauthenticated requests: nobody authenticates to a route that does not exist)."""
        if not self._unauthenticated_budget(request):
            return False
        return await self._record(request, status, frozenset())

    async def record_open(self, request: web.Request, query_keys: frozenset[str]) -> None:
        """For a stream: record its opening (status 200) before the first byte goes out, or refuse it."""
        if not await self._record(request, 200, query_keys):
            raise ApiError(503, "the audit trail cannot be written: try again")

    def _record_later(self, request: web.Request, status: int, query_keys: frozenset[str]) -> None:
        self.gw.submit([self.access_record(request, status, query_keys)])


def recorded_target(request: web.Request, query_keys: frozenset[str]) -> str:
    """The route and the query's parameter names as an ``admin_access`` record names them. Only what the gateway
    knows the shape of is copied from the request — identifiers of the shapes it mints, the known parameter
    names — so that nothing a caller puts into the URL (a token pasted into the path or the query) reaches the
    trail."""
    resource = request.match_info.route.resource
    path = "(unrouted)" if resource is None or resource.name == UNROUTED else resource.canonical
    for name, value in request.match_info.items():
        pattern = RECORDED_PARAMS.get(name)
        if pattern is not None and pattern.fullmatch(value):
            path = path.replace("{" + name + "}", value)
    names = set(request.query.keys())
    keys = sorted(names & query_keys)
    if names - query_keys:
        keys.append(f"+{len(names - query_keys)} unknown")
    return path + ("?" + ",".join(keys) if keys else "")


def _origin(url: str) -> str:
    """scheme://host:port, normalised (case, default ports, a trailing dot): equal origins compare equal."""
    try:
        u = URL(url)
        host = (u.host or "").lower().rstrip(".")
        return f"{(u.scheme or '').lower()}://{host}:{u.port}"
    except ValueError:
        return url


def _role_config(role: Role) -> str:
    return {
        Role.AUDITOR: "a member of admin.auditor_groups or admin.admin_groups",
        Role.ADMIN: "a member of admin.admin_groups",
        Role.APPROVER: "a member of a group that a hold rule names as approvers",
    }[role]
