"""The admin API over plain HTTP, against a real gateway and the real OpenID provider: who may do what, what is never
shown, and the edges a browser does not exercise (bodies in pieces, stream caps, unrouted requests, console sessions
used from a script).

Users (tests/node/oidc_provider.mjs): alice (eng, oncall) asks; bob (eng) approves; carol (auditors) audits; dave has
no group; the client ``portcullis-service`` (groups svc-batch) is a machine in the approver group ``svc-batch``.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest

from portcullis.store import console_sessions
from portcullis.store.db import make_engine
from tests.support.gateway import RunningGateway, demo_stdio, start_gateway, write_config
from tests.support.oidc import OidcProvider
from tests.support.raw import McpSession
from tests.support.records import load_records
from tests.support.waiting import eventually_async

pytestmark = [pytest.mark.e2e, pytest.mark.node]

SECRET = "hunter2-correct-horse-battery"
POLICY = """\
version: 1
default: deny
rules:
  - id: lists
    allow: {methods: [tools/list]}
  - id: reads
    allow: {tools: [echo, query_customers]}
  - id: admin-tools-for-eng
    allow: {groups: [eng], tools: [read_config]}
  - id: drops-need-approval
    hold: {tools: [drop_table], approvers: [eng, svc-batch]}
"""


@pytest.fixture(scope="module")
def gateway(op: OidcProvider, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    tmp = tmp_path_factory.mktemp("admin-api")
    (tmp / "policy.yaml").write_text(POLICY)
    path, store = write_config(
        tmp,
        {"demo": demo_stdio()},
        auth={"mode": "oidc", "issuers": [{"issuer": op.issuer}], "api_key_refresh": 60},
        policy={"file": str(tmp / "policy.yaml")},
        admin={"auditor_groups": ["auditors"], "admin_groups": ["eng"]},
        approvals={"max_pending_per_principal": 2},
    )
    gw = start_gateway(path, store)
    try:
        yield gw
    finally:
        gw.proc.stop(timeout=10)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as s:
        yield s


async def token(op: OidcProvider, gw: RunningGateway, user: str) -> str:
    return await op.aio.user_token(user, gw.base)


async def api(
    http: aiohttp.ClientSession, gw: RunningGateway, method: str, path: str, bearer: str | None = None, **kw: Any
) -> tuple[int, Any]:
    headers = dict(kw.pop("headers", {}))
    if bearer is not None:
        headers["Authorization"] = f"Bearer {bearer}"
    async with http.request(method, f"{gw.base}/admin/api{path}", headers=headers, **kw) as r:
        return r.status, await r.json(content_type=None)


async def held_drop(http: aiohttp.ClientSession, gw: RunningGateway, op: OidcProvider, table: str) -> str:
    """alice asks to drop ``table`` (answered held at once: approvals.wait is 0); the approval request's id."""
    alice = await McpSession(http, gw.url("demo"), await op.aio.user_token("alice", gw.url("demo"))).open()
    answer = await alice.call_tool("drop_table", {"table": table, "note": f"password={SECRET}"})
    assert answer["error"]["code"] == -32011, answer
    return str(answer["error"]["data"]["approval"])


def console_cookie(gw: RunningGateway, user: str, groups: list[str]) -> tuple[dict[str, str], str]:
    """A console session opened straight in the store (what /ui/callback does after the provider's redirect)."""
    engine = make_engine(gw.store)
    try:
        caller = {"sub": user, "groups": groups, "iss": "test", "kind": "user", "email": None, "client_id": None}
        secret, session = console_sessions.create(engine, caller, time.time_ns() + 600 * 10**9)
    finally:
        engine.dispose()
    return {"Cookie": f"__Host-portcullis-console={secret}"}, session.csrf


async def test_a_body_sent_in_pieces_is_read_whole_and_a_large_one_refused(
    gateway: RunningGateway, op: OidcProvider
) -> None:
    bob = await token(op, gateway, "bob")
    body = json.dumps(
        {"principal": {"subject": "alice", "groups": ["eng"]}, "server": "demo", "target": "read_config",
         "arguments": {"pad": "x" * 20_000}}
    ).encode()  # fmt: skip

    def send_in_two_pieces() -> bytes:
        host, port = gateway.base.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as s:
            head = (
                f"POST /admin/api/policy/dry-run HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {bob}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            ).encode()
            s.sendall(head + body[:1000])
            time.sleep(0.2)  # not a wait for a condition: the second piece must arrive later, in its own segment
            s.sendall(body[1000:])
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks)

    answer = await asyncio.to_thread(send_in_two_pieces)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["decision"] == "allow"
    async with aiohttp.ClientSession() as http:
        status, err = await api(http, gateway, "POST", "/policy/dry-run", bob, data=b"{" + b" " * 70_000 + b"}")
    assert (status, err["error"]) == (413, "payload_too_large")


async def test_what_clients_sent_is_masked_in_the_timeline_and_not_searchable_but_by_admins(
    gateway: RunningGateway, op: OidcProvider, http: aiohttp.ClientSession
) -> None:
    alice = await McpSession(http, gateway.url("demo"), await op.aio.user_token("alice", gateway.url("demo"))).open()
    card = "4111 1111 1111 1111"
    said = await alice.call_tool("echo", {"text": f"card {card} password={SECRET}"})
    assert "result" in said
    carol, bob = await token(op, gateway, "carol"), await token(op, gateway, "bob")  # auditor; admin (eng)
    status, timeline = await api(http, gateway, "GET", f"/sessions/{alice.sid}", carol)
    assert status == 200 and card not in json.dumps(timeline) and SECRET not in json.dumps(timeline)
    request = next(r for r in timeline["records"] if r["direction"] == "c2s" and r["method"] == "tools/call")
    assert {m["class"] for m in request["display_masked"]} >= {"credit_card", "password_assignment"}

    q = {"text": SECRET[:12], "session": alice.sid}
    status, found = await api(http, gateway, "GET", "/audit/records", carol, params=q)
    assert status == 200 and found["records"] == []  # no oracle over values clients sent
    status, found = await api(http, gateway, "GET", "/audit/records", bob, params=q)
    assert status == 200 and found["records"] and SECRET not in json.dumps(found)  # admins find it; shown masked

    status, _ = await api(http, gateway, "GET", f"/sessions/{alice.sid}/export", carol)
    assert status == 403  # the record of record (client-sent values as sent) is for admins
    status, doc = await api(http, gateway, "GET", f"/sessions/{alice.sid}/export", bob)
    assert status == 200 and doc["format"] == "portcullis.session"
    assert "owner" not in doc["session"] and "state" not in doc["session"]
    assert all(r["sealed_b64"] is None for r in doc["records"])


async def test_approvals_are_decided_by_people_and_invisible_to_everyone_else(
    gateway: RunningGateway, op: OidcProvider, http: aiohttp.ClientSession
) -> None:
    req = await held_drop(http, gateway, op, "orders")
    dave = await token(op, gateway, "dave")
    for verb in ("approve", "deny"):
        status, err = await api(http, gateway, "POST", f"/approvals/{req}/{verb}", dave, json={})
        assert (status, err["error"]) == (404, "not_found")  # as a read: nothing told about someone else's request
    machine = await op.aio.client_credentials_token(gateway.base)  # svc-batch: an approver group, but a machine
    status, err = await api(http, gateway, "POST", f"/approvals/{req}/approve", machine, json={})
    assert status == 403 and "only people approve" in err["message"]
    bob = await token(op, gateway, "bob")
    status, mine = await api(http, gateway, "GET", "/approvals", bob, params={"state": "pending", "limit": "1"})
    assert status == 200 and [a["id"] for a in mine["approvals"]] == [req]  # the limit counts what bob may see
    status, row = await api(http, gateway, "GET", f"/approvals/{req}", bob)
    assert row["state"] == "pending" and SECRET not in json.dumps(row)  # the held arguments are masked


async def test_roles_hold_for_keys_and_callers_see_only_what_they_may_use(
    gateway: RunningGateway, op: OidcProvider, http: aiohttp.ClientSession
) -> None:
    bob = await token(op, gateway, "bob")  # eng: admin
    status, err = await api(
        http, gateway, "POST", "/api-keys", bob, json={"name": "ci", "owner": "bob", "groups": ["eng"]}
    )
    assert status == 400 and "admin.admin_groups" in err["message"]
    status, key = await api(
        http, gateway, "POST", "/api-keys", bob, json={"name": "siem", "owner": "bob", "groups": ["auditors"]}
    )
    assert status == 201 and key["token"].startswith("pcl_")
    status, me = await api(http, gateway, "GET", "/me", key["token"])
    assert status == 200 and me["roles"] == ["auditor"] and me["kind"] == "apikey"
    status, _ = await api(http, gateway, "POST", f"/api-keys/{key['id']}/revoke", bob)
    assert status == 200
    status, _ = await api(http, gateway, "GET", "/me", key["token"])
    assert status == 401  # refused at once on this replica (api_key_refresh is 60 s here)

    dave = await token(op, gateway, "dave")
    status, perms = await api(http, gateway, "GET", "/policy/permissions", dave)
    items = {i["name"]: i for s in perms["servers"] for i in s["items"]}
    assert "read_config" not in items and items["echo"]["decision"] == "allow"  # denied items are not listed
    assert all(i["rule"] is None for i in items.values())  # nor the policy's rule names
    status, health = await api(http, gateway, "GET", "/health", dave)
    assert status == 200 and health["agents"] == []


async def test_inbox_streams_are_capped_and_end_when_the_console_session_does(
    gateway: RunningGateway, http: aiohttp.ClientSession
) -> None:
    cookie, csrf = console_cookie(gateway, "erin", ["eng"])
    streams: list[aiohttp.ClientResponse] = []
    try:
        for _ in range(4):
            r = await http.get(f"{gateway.base}/admin/api/approvals/stream", headers=cookie)
            assert r.status == 200 and (await r.content.readuntil(b"\n\n")).startswith(b"event: approvals")
            streams.append(r)
        status, err = await api(http, gateway, "GET", "/approvals/stream", headers=cookie)
        assert (status, err["error"]) == (429, "too_many_requests")

        async with http.post(gateway.base + "/ui/logout", headers={**cookie, "X-CSRF-Token": csrf}) as r:
            assert r.status == 204

        async def ended() -> bool:
            for s in streams:
                if not (s.content.at_eof() or await _drained(s)):
                    return False
            return True

        await eventually_async(ended, 20, "the streams of a signed-out session to end")
    finally:
        for s in streams:
            s.close()


async def _drained(r: aiohttp.ClientResponse) -> bool:
    try:
        await asyncio.wait_for(r.content.read(65536), 0.5)
    except TimeoutError:
        return False
    return r.content.at_eof()


async def test_requests_matching_no_route_are_recorded_without_their_path(
    gateway: RunningGateway, http: aiohttp.ClientSession
) -> None:
    pasted = "pcl_0123456789ab_" + "s" * 43
    status, err = await api(http, gateway, "GET", f"/sessions/{pasted}/nothing")
    assert (status, err["error"]) == (404, "not_found")
    status, err = await api(http, gateway, "DELETE", "/me")
    assert (status, err["error"]) == (405, "method_not_allowed")

    async def recorded() -> bool:
        details = [r["detail"] for r in load_records(gateway.store) if r["kind"] == "admin_access"]
        return any("(unrouted) -> 404" in d for d in details) and any("(unrouted) -> 405" in d for d in details)

    await eventually_async(recorded, 10, "the unrouted requests' records")
    assert not any(pasted in str(r["detail"]) for r in load_records(gateway.store))


async def test_one_caller_cannot_flood_the_approvers_inbox(
    gateway: RunningGateway, op: OidcProvider, http: aiohttp.ClientSession
) -> None:
    dave = await McpSession(http, gateway.url("demo"), await op.aio.user_token("dave", gateway.url("demo"))).open()
    for table in ("t1", "t2"):
        assert (await dave.call_tool("drop_table", {"table": table}))["error"]["code"] == -32011  # held, asked
    refused = await dave.call_tool("drop_table", {"table": "t3"})
    assert refused["error"]["code"] == -32013 and refused["error"]["data"]["pending"] == 2, refused
    assert "max_pending_per_principal" in refused["error"]["message"]
    again = await dave.call_tool("drop_table", {"table": "t1"})  # a retry of a pending one is still answered
    assert again["error"]["code"] == -32011
    bob = await token(op, gateway, "bob")
    _, pending = await api(http, gateway, "GET", "/approvals", bob, params={"state": "pending"})
    assert not any('"t3"' in json.dumps(a["arguments"]) for a in pending["approvals"])  # never asked
    rows = [r for r in load_records(gateway.store) if r["session_id"] == dave.sid and r["kind"] == "error"]
    assert any("Too many calls awaiting approval" in (r["detail"] or "") for r in rows)


async def test_a_flood_of_strangers_is_summarised_in_the_trail_not_written_request_by_request(
    gateway: RunningGateway, http: aiohttp.ClientSession
) -> None:
    def strangers() -> list[str]:
        return [
            r["detail"]
            for r in load_records(gateway.store)
            if r["kind"] == "admin_access" and "/admin/api/grants" in r["detail"] and "unauthenticated" in r["detail"]
        ]

    before = len(strangers())
    started = time.monotonic()
    for _ in range(100):
        async with http.get(f"{gateway.base}/admin/api/grants") as r:
            assert r.status == 401  # every one is refused all the same
    took = time.monotonic() - started
    one_by_one = len(strangers()) - before  # committed before each answer: all there now
    assert one_by_one <= 20 + 5 * took + 1, (one_by_one, took)  # 20 at once, then 5 a second: not 100
    summaries: list[str] = []

    async def summarised() -> bool:
        async with http.get(f"{gateway.base}/admin/api/grants") as r:  # a stranger keeps knocking
            assert r.status == 401
        summaries[:] = [
            r["detail"]
            for r in load_records(gateway.store)
            if r["kind"] == "admin_access" and "refused and not recorded one by one" in r["detail"]
        ]
        return bool(summaries)

    await eventually_async(summarised, 20, "the summary record of the refused flood")
    assert "unauthenticated admin requests from 127.0.0.1" in summaries[0]
    assert int(summaries[0].split()[0]) + one_by_one >= 100  # every refused request is accounted for
