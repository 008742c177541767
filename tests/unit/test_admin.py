"""The admin API's parts that need no gateway: console sessions in the store (SQLite and PostgreSQL), effective
permissions, the OpenAPI document built from the operations, what an ``admin_access`` record may name, the one
error shape and the security headers (an aiohttp app with the middleware, on a loopback port)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from sqlalchemy import Engine

from portcullis.admin import schemas as S
from portcullis.admin.api import OPERATIONS
from portcullis.admin.http import CSP, ApiError, add_unrouted, shaped
from portcullis.admin.openapi import document
from portcullis.admin.permissions import effective_permissions, named_items
from portcullis.audit.search import parse_when
from portcullis.policy.engine import PolicyEngine
from portcullis.policy.load import load_policy_text
from portcullis.policy.model import Principal
from portcullis.store import console_sessions
from tests.support.audit import engine, store_url  # noqa: F401 - fixtures

POLICY = """\
version: 1
default: deny
rules:
  - id: lists
    allow: {methods: [tools/list]}
  - id: reads
    allow: {servers: [db], tools: [query]}
  - id: small-deletes
    allow: {servers: [db], tools: [delete_rows], when: "int(arguments.limit) <= 10"}
  - id: drops-need-approval
    hold: {servers: [db], groups: [oncall], tools: [drop_table], approvers: [dba]}
  - id: nobody-drops-prod
    deny: {servers: [db], tools: [drop_table], when: "arguments.table.startsWith('prod_')"}
"""


def test_a_console_session_lives_until_it_expires_or_ends(engine: Engine) -> None:  # noqa: F811
    caller = {"sub": "bob", "groups": ["eng"], "iss": "https://idp.example", "kind": "user"}
    secret, session = console_sessions.create(engine, caller, time.time_ns() + 60 * 10**9)
    loaded = console_sessions.load(engine, secret)
    assert loaded is not None and loaded.caller == caller and loaded.csrf == session.csrf
    assert console_sessions.load(engine, secret + "x") is None  # only the exact secret opens it
    assert console_sessions.load(engine, secret, now_ns=session.expires_ns + 1) is None  # expired
    assert console_sessions.end(engine, secret) and not console_sessions.end(engine, secret)
    assert console_sessions.load(engine, secret) is None  # logged out: gone on every replica
    with engine.connect() as conn:
        stored = conn.exec_driver_sql("SELECT id_hash, caller FROM console_sessions").all()
    assert secret not in str(stored)  # the store keeps a hash of the cookie, never the cookie


def test_effective_permissions_say_what_is_allowed_held_denied_or_depends_on_the_arguments() -> None:
    pe = PolicyEngine(load_policy_text(POLICY, "p.yaml"))
    policy = pe.policy
    known = {"db": {"tool": sorted({"query", "drop_table", "delete_rows", "vacuum"})}}
    alice = Principal("alice", groups=frozenset({"oncall"}))
    got = effective_permissions(pe, alice, ["db", "web"], known)
    db = {i["name"]: i for i in got["servers"][0]["items"]}
    assert got["servers"][0]["access"] == "allow"
    assert db["query"]["decision"] == "allow" and db["vacuum"]["decision"] == "deny"
    assert db["delete_rows"]["decision"] == "depends" and "small-deletes" in db["delete_rows"]["reason"]
    # held for alice, but a deny on some arguments outranks the hold: it depends on the table
    assert db["drop_table"]["decision"] == "depends" and "nobody-drops-prod" in db["drop_table"]["reason"]
    assert got["servers"][0]["unlisted"]["decision"] == "deny"
    assert got["servers"][1]["server"] == "web" and got["servers"][1]["items"] == []
    bob = {i["name"]: i for i in effective_permissions(pe, Principal("bob"), ["db"], known)["servers"][0]["items"]}
    assert bob["drop_table"]["decision"] == "deny"  # the hold rule is for oncall only
    assert named_items(policy, "db") == {"tool": {"query", "delete_rows", "drop_table"}}
    assert named_items(policy, "web") == {}


def test_the_openapi_document_describes_every_operation_with_its_role_and_error_shape() -> None:
    doc = document("http://127.0.0.1:8080", ["demo", "db"])
    assert doc["openapi"].startswith("3.1")
    ops = {(m.upper(), p) for p, methods in doc["paths"].items() for m in methods}
    assert ops == {(o.method, "/admin/api" + o.path) for o in OPERATIONS}
    create = doc["paths"]["/admin/api/agent-tokens"]["post"]
    assert create["requestBody"]["content"]["application/json"]["schema"]["properties"]["servers"]["items"] == {
        "type": "string",
        "enum": ["demo", "db"],
    }
    assert S.AGENT_TOKEN_BODY["properties"]["servers"]["items"] == {"type": "string"}  # the shared one is untouched
    for methods in doc["paths"].values():
        for spec in methods.values():
            assert spec["responses"]["401"] == {"$ref": "#/components/responses/E401"}
    assert doc["components"]["schemas"]["Error"]["required"] == ["error", "message"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-24T10:00:00Z", 1_795_514_400_000_000_000),
        ("2026-11-24t10:00:00.123456789z", 1_795_514_400_123_456_000),  # lower case, nanoseconds cut
        ("2016-12-31T23:59:60Z", 1_483_228_799_000_000_000),  # a leap second
        ("0000-01-01T00:00:00Z", -(2**63)),  # before what 64 bits of ns can say: the beginning
        ("99999999999999999999999", 2**63 - 1),
        ("9" * 400 + "s", -(2**63)),  # further back than 64 bits of ns reach: the beginning, not an overflow
    ],
)
def test_times_in_queries_accept_all_of_rfc_3339_and_stay_in_range(text: str, expected: int) -> None:
    assert parse_when(text) == expected


def test_an_impossible_date_is_refused_with_what_was_expected() -> None:
    with pytest.raises(ValueError, match="not a valid date-time"):
        parse_when("2026-13-45T10:00:00Z")
    with pytest.raises(ValueError, match="expected RFC 3339"):
        parse_when("yesterday")


@pytest.fixture
async def shaped_app() -> AsyncIterator[tuple[aiohttp.ClientSession, str, list[tuple[str, int]]]]:
    async def boom(_request: web.Request) -> web.Response:
        raise RuntimeError("secret-detail-that-must-not-leak")

    async def refuse(_request: web.Request) -> web.Response:
        raise ApiError(409, "already decided")

    async def ok(request: web.Request) -> web.Response:
        await request.read()  # over client_max_size: aiohttp's 413, given the one shape by the middleware
        return web.json_response({"ok": True})

    unrouted: list[tuple[str, int]] = []

    async def recorder(request: web.Request, status: int) -> bool:
        unrouted.append((request.method, status))
        return True

    api = web.Application(client_max_size=64)  # as server/app.py mounts it
    api.router.add_get("/boom", shaped(boom))
    api.router.add_get("/refuse", shaped(refuse))
    api.router.add_post("/ok", shaped(ok))
    add_unrouted(api, recorder)
    app = web.Application(client_max_size=64)
    app.router.add_get("/elsewhere", ok)
    app.add_subapp("/admin/api", api)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    async with aiohttp.ClientSession() as http:
        yield http, f"http://127.0.0.1:{port}", unrouted
    await runner.cleanup()


async def _get(http: aiohttp.ClientSession, url: str, method: str = "GET", **kw: Any) -> tuple[int, Any, Any]:
    async with http.request(method, url, **kw) as r:
        return r.status, await r.json(content_type=None), r.headers


async def test_every_refusal_under_the_admin_api_has_the_one_shape_and_the_security_headers(
    shaped_app: tuple[aiohttp.ClientSession, str, list[tuple[str, int]]],
) -> None:
    http, base, unrouted = shaped_app
    status, body, headers = await _get(http, base + "/admin/api/nope")
    assert (status, body) == (404, {"error": "not_found", "message": "no such route"})
    assert headers["Content-Security-Policy"] == CSP and headers["Cache-Control"] == "no-store"
    status, body, headers = await _get(http, base + "/admin/api/ok")
    assert (status, body["error"]) == (405, "method_not_allowed") and headers["Allow"] == "POST"
    assert unrouted == [("GET", 404), ("GET", 405)]  # both recorded
    status, body, _ = await _get(http, base + "/admin/api/ok", "POST", data=b"x" * 1000)
    assert (status, body["error"]) == (413, "payload_too_large")
    status, body, _ = await _get(http, base + "/admin/api/refuse")
    assert (status, body) == (409, {"error": "conflict", "message": "already decided"})
    status, body, _ = await _get(http, base + "/admin/api/boom")
    assert status == 500 and body["error"] == "internal" and "secret-detail" not in str(body)
    async with http.get(base + "/elsewhere") as r:  # the MCP side keeps its own answers and headers
        assert "Content-Security-Policy" not in r.headers


def test_the_development_sign_in_answers_this_machine_only() -> None:
    from unittest.mock import Mock

    from aiohttp.test_utils import make_mocked_request

    from portcullis.identity.dev_login import _loopback_only

    def request_from(peer: str) -> web.Request:
        transport = Mock()
        transport.get_extra_info.side_effect = lambda key, default=None: (peer, 4711) if key == "peername" else default
        return make_mocked_request("GET", "/dev-issuer/authorize", transport=transport)

    for peer in ("127.0.0.1", "::1"):
        _loopback_only(request_from(peer))
    for peer in ("10.0.0.7", "192.168.1.2", "2001:db8::1"):
        with pytest.raises(web.HTTPForbidden):
            _loopback_only(request_from(peer))


def test_only_people_approve_and_keys_are_never_admins() -> None:
    from types import SimpleNamespace
    from typing import cast

    from portcullis.admin.access import Role, Who, roles_of
    from portcullis.identity.edge import Caller
    from portcullis.server.gateway import Gateway

    policy = load_policy_text("version: 1\nrules:\n  - id: h\n    hold: {tools: [drop], approvers: [dba]}\n", "p.yaml")
    gw = cast(
        Gateway,
        SimpleNamespace(
            config=SimpleNamespace(admin=SimpleNamespace(admin_groups=["ops"], auditor_groups=["audit"])),
            policy=SimpleNamespace(policy=policy),
        ),
    )
    groups = frozenset({"ops", "dba"})
    assert roles_of(gw, groups) == {Role.ADMIN, Role.AUDITOR, Role.APPROVER}
    assert roles_of(gw, groups, "apikey") == {Role.AUDITOR, Role.APPROVER}  # a key in an admin group: an auditor
    assert roles_of(gw, frozenset({"audit"})) == {Role.AUDITOR}
    for kind, person in (("user", True), ("service", False), ("apikey", False)):
        caller = Caller.of(Principal("x", groups=groups, kind=kind), "iss", frozenset())
        assert Who(caller, frozenset(), "bearer").person is person
