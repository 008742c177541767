"""Just-in-time approval with real principals from the OpenID provider, through a real gateway, to an upstream that
lists everything it received (so "the upstream saw it only after approval" is observed, not assumed).

Policy: alice (groups eng, oncall) is held on the faulty upstream's ``ok`` tool; the approvers are group ``eng``, so
bob (eng) may approve, carol (auditors) and dave (no groups) may not, and alice — although in ``eng`` — may never
approve her own call.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from portcullis.approvals.model import args_digest
from tests.support.gateway import RunningGateway, start_gateway, write_config
from tests.support.oidc import OidcProvider
from tests.support.procs import ManagedProcess, running_process
from tests.support.raw import McpSession
from tests.support.records import load_records
from tests.support.waiting import eventually, eventually_async

pytestmark = [pytest.mark.e2e, pytest.mark.node]


def call_digest(arguments: dict[str, Any], tool: str = "ok") -> str:
    """What an approval is bound to: the call's params (without _meta)."""
    return args_digest({"name": tool, "arguments": arguments})


FAULTY = Path(__file__).resolve().parents[1] / "fixtures" / "faulty_upstream.py"
ACCEPT = "application/json, text/event-stream"
POLICY = """\
version: 1
default: deny
rules:
  - id: everyone-lists
    allow: {methods: [tools/list]}
  - id: oncall-ok-needs-approval
    hold: {groups: [oncall], tools: [ok], approvers: [eng]}
"""


@pytest.fixture(scope="module")
def faulty() -> Iterator[ManagedProcess]:
    with running_process([sys.executable, str(FAULTY), "--port", "0"], ready_timeout=30) as proc:
        yield proc


def _config(
    tmp: Path, op: OidcProvider, upstream: ManagedProcess, name: str = "faulty", policy_text: str = POLICY, **extra: Any
) -> tuple[Path, str]:
    policy = tmp / "policy.yaml"
    policy.write_text(policy_text)
    return write_config(
        tmp,
        {name: {"url": upstream.ready_value}},
        auth={"mode": "oidc", "issuers": [{"issuer": op.issuer}]},
        policy={"file": str(policy)},
        **extra,
    )


@contextlib.contextmanager
def _running(path: Path, store: str) -> Iterator[RunningGateway]:
    gw = start_gateway(path, store)
    try:
        yield gw
    finally:
        gw.proc.stop(timeout=10)


@pytest.fixture(scope="module")
def gateway(
    op: OidcProvider, faulty: ManagedProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningGateway]:
    with _running(*_config(tmp_path_factory.mktemp("gw"), op, faulty)) as gw:
        yield gw


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as s:
        yield s


class Mcp(McpSession):
    """One MCP session of one user; ``call`` calls the faulty upstream's ``ok`` tool."""

    async def call(self, args: dict[str, Any], **headers: str) -> dict[str, Any]:
        return await self.call_tool("ok", args, **headers)


async def mcp(http: aiohttp.ClientSession, gw: RunningGateway, op: OidcProvider, user: str) -> Mcp:
    token = await asyncio.to_thread(op.user_token, user, gw.url("faulty"))
    session = await Mcp(http, gw.url("faulty"), token, "approvals").open()
    assert isinstance(session, Mcp)
    return session


async def admin(
    http: aiohttp.ClientSession, gw: RunningGateway, op: OidcProvider, user: str, method: str, path: str, **body: Any
) -> tuple[int, dict[str, Any]]:
    token = await asyncio.to_thread(op.user_token, user, gw.base)
    async with http.request(
        method, f"{gw.base}/admin/api/approvals{path}", json=body or None, headers={"Authorization": f"Bearer {token}"}
    ) as r:
        return r.status, await r.json()


async def calls_received(http: aiohttp.ClientSession, faulty: ManagedProcess) -> int:
    async with http.get(faulty.ready_value.removesuffix("/mcp") + "/received") as r:
        got: list[str] = await r.json()
    return got.count("tools/call")


def held_id(msg: dict[str, Any]) -> str:
    assert msg.get("error", {}).get("code") == -32011, msg
    data = msg["error"]["data"]
    assert data["held"] is True and data["approvers"] == ["eng"] and data["rule"] == "oncall-ok-needs-approval"
    assert data["approval"] in msg["error"]["message"] and data["status_url"].endswith(data["approval"])
    return str(data["approval"])


async def test_a_held_call_reaches_the_upstream_only_after_approval_and_only_once(
    gateway: RunningGateway, op: OidcProvider, faulty: ManagedProcess, http: aiohttp.ClientSession
) -> None:
    alice = await mcp(http, gateway, op, "alice")
    before = await calls_received(http, faulty)
    first = held_id(await alice.call({"n": 1}))
    assert held_id(await alice.call({"n": 1})) == first  # a retry while pending finds the same request
    assert await calls_received(http, faulty) == before

    status, shown = await admin(http, gateway, op, "bob", "GET", f"/{first}")
    assert status == 200 and shown["state"] == "pending" and "alice" in shown["requester"]
    assert shown["arguments"] == {"name": "ok", "arguments": {"n": 1}}  # what the approver decides on
    status, decided = await admin(http, gateway, op, "bob", "POST", f"/{first}/approve", reason="change CHG-1")
    assert status == 200 and decided["state"] == "approved"
    assert decided["votes"][0]["reason"] == "change CHG-1" and "bob" in decided["votes"][0]["voter"]
    assert await calls_received(http, faulty) == before  # approval alone forwards nothing

    done = await alice.call({"n": 1})
    assert "result" in done, done
    assert await calls_received(http, faulty) == before + 1
    again = held_id(await alice.call({"n": 1}))  # once only: the next identical call is held anew
    assert again != first
    assert await calls_received(http, faulty) == before + 1
    status, shown = await admin(http, gateway, op, "bob", "GET", f"/{first}")
    assert shown["state"] == "released" and shown["released_ns"] is not None

    def recorded() -> bool:
        kinds = [(r["kind"], r["detail"]) for r in load_records(gateway.store) if r["direction"] == "gw"]
        return (
            any(k == "approval_requested" and first in d for k, d in kinds)
            and any(k == "approval_approved" and first in d and "bob" in d for k, d in kinds)
            and any(k == "approval_released" and first in d for k, d in kinds)
        )

    await eventually(recorded, what="requested, approved and released events in the record")


async def test_changed_arguments_are_not_covered_by_an_earlier_approval(
    gateway: RunningGateway, op: OidcProvider, faulty: ManagedProcess, http: aiohttp.ClientSession
) -> None:
    alice = await mcp(http, gateway, op, "alice")
    approved = held_id(await alice.call({"amount": 10}))
    assert (await admin(http, gateway, op, "bob", "POST", f"/{approved}/approve"))[0] == 200
    before = await calls_received(http, faulty)
    other = held_id(await alice.call({"amount": 10_000}))
    assert other != approved and await calls_received(http, faulty) == before
    assert "result" in await alice.call({"amount": 10})  # the approved call itself still goes through
    assert await calls_received(http, faulty) == before + 1


async def test_only_other_approvers_may_decide(
    gateway: RunningGateway, op: OidcProvider, http: aiohttp.ClientSession
) -> None:
    alice = await mcp(http, gateway, op, "alice")
    req = held_id(await alice.call({"self": True}))
    status, body = await admin(http, gateway, op, "alice", "POST", f"/{req}/approve")
    assert status == 403 and "own call" in body["message"]  # alice is in eng, but it is her call
    status, body = await admin(http, gateway, op, "carol", "POST", f"/{req}/approve")
    assert status == 404 and body["error"] == "not_found"  # not hers to decide: answered as the read answers
    status, _ = await admin(http, gateway, op, "carol", "GET", f"/{req}")
    assert status == 404  # not hers to see
    status, listed = await admin(http, gateway, op, "bob", "GET", "?state=pending")
    assert status == 200 and req in [a["id"] for a in listed["approvals"]]
    async with http.post(f"{gateway.base}/admin/api/approvals/{req}/approve") as r:
        assert r.status == 401  # no token
    status, shown = await admin(http, gateway, op, "bob", "GET", f"/{req}")
    assert shown["state"] == "pending" and shown["votes"] == []


async def test_a_deny_ends_it_and_the_retry_says_so(
    gateway: RunningGateway, op: OidcProvider, faulty: ManagedProcess, http: aiohttp.ClientSession
) -> None:
    alice = await mcp(http, gateway, op, "alice")
    req = held_id(await alice.call({"drop": "prod"}))
    status, body = await admin(http, gateway, op, "bob", "POST", f"/{req}/deny", reason="not during the freeze")
    assert status == 200 and body["state"] == "denied"
    status, body = await admin(http, gateway, op, "bob", "POST", f"/{req}/approve")
    assert status == 409 and "is denied" in body["message"]
    before = await calls_received(http, faulty)
    retry = await alice.call({"drop": "prod"})
    assert retry["error"]["code"] == -32010 and req in retry["error"]["message"], retry
    assert "not during the freeze" in retry["error"]["message"]
    assert await calls_received(http, faulty) == before


def test_the_cli_lists_and_approves(gateway: RunningGateway, op: OidcProvider, tmp_path: Path) -> None:
    async def held() -> str:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as h:
            alice = await mcp(h, gateway, op, "alice")
            return held_id(await alice.call({"via": "cli"}))

    req = asyncio.run(held())
    token = tmp_path / "bob.token"
    token.write_text(op.user_token("bob", gateway.base))

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "portcullis", "approvals", *args, "--gateway", gateway.base]
        return subprocess.run([*argv, "--token-file", str(token)], capture_output=True, text=True, timeout=60)

    listed = cli("list")
    assert listed.returncode == 0 and req in listed.stdout, listed.stderr
    approved = cli("approve", req, "--reason", "looks fine")
    assert approved.returncode == 0 and f"{req}: approved" in approved.stdout, approved.stderr
    again = cli("approve", req)
    assert again.returncode == 1 and "HTTP 409" in again.stderr and "is approved" in again.stderr


async def test_a_pending_request_survives_a_restart(
    op: OidcProvider, faulty: ManagedProcess, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    path, store = _config(tmp_path, op, faulty)
    gw = start_gateway(path, store)
    try:
        req = held_id(await (await mcp(http, gw, op, "alice")).call({"restart": 1}))
    finally:
        gw.proc.stop(timeout=10)
    gw = start_gateway(path, store)  # same store, new process (and a new port: new tokens)
    try:
        status, listed = await admin(http, gw, op, "bob", "GET", "?state=pending")
        assert status == 200 and req in [a["id"] for a in listed["approvals"]]
        assert (await admin(http, gw, op, "bob", "POST", f"/{req}/approve"))[0] == 200
        before = await calls_received(http, faulty)
        alice = await mcp(http, gw, op, "alice")
        assert "result" in await alice.call({"restart": 1})
        assert held_id(await alice.call({"restart": 1})) != req
        assert await calls_received(http, faulty) == before + 1
    finally:
        gw.proc.stop(timeout=10)


class Receiver:
    """A webhook receiver (stdlib HTTP server in a thread) that fails the first delivery of each message (per path,
    event and approval), then accepts the retry."""

    def __init__(self) -> None:
        self.bodies: list[tuple[str, dict[str, Any]]] = []
        self.failed: set[tuple[str, str]] = set()
        self.lock = threading.Lock()
        rx = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                msg = json.loads(body)
                key = (self.path, json.dumps(msg.get("event")) + json.dumps(msg.get("text", msg.get("approval"))))
                with rx.lock:
                    first = key not in rx.failed
                    rx.failed.add(key)
                    if not first:
                        rx.bodies.append((self.path, msg))
                self.send_response(500 if first else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def got(self, path: str) -> list[dict[str, Any]]:
        with self.lock:
            return [b for p, b in self.bodies if p == path]


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    try:
        yield r
    finally:
        r.server.shutdown()
        r.server.server_close()


@pytest.fixture(scope="module")
def waiting_gateway(
    op: OidcProvider, faulty: ManagedProcess, receiver: Receiver, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningGateway]:
    hooks = [{"url": f"{receiver.url}/hook"}, {"url": f"{receiver.url}/slack/T1/B2/x", "format": "slack"}]
    path, store = _config(
        tmp_path_factory.mktemp("gw-wait"),
        op,
        faulty,
        approvals={
            "wait": 20,
            "poll_interval": 5,
            "break_glass_groups": ["oncall"],
            "webhooks": hooks,
            "webhook_backoff": 0.05,
        },
    )
    with _running(path, store) as gw:
        yield gw


async def pending_for(http: aiohttp.ClientSession, gw: RunningGateway, op: OidcProvider, marker: str) -> str:
    """The id of the pending request whose call is the one with ``marker`` (waits, bounded, until it is listed)."""

    found: list[str] = []

    async def listed() -> bool:
        _status, body = await admin(http, gw, op, "bob", "GET", "?state=pending")
        found[:] = [a["id"] for a in body["approvals"] if a["args_digest"] == call_digest({"marker": marker})]
        return bool(found)

    await eventually_async(listed, within=15, what=f"a pending request for {marker}")
    return found[0]


async def test_a_waiting_caller_gets_the_result_once_someone_approves(
    waiting_gateway: RunningGateway, op: OidcProvider, faulty: ManagedProcess, http: aiohttp.ClientSession
) -> None:
    gw = waiting_gateway
    alice = await mcp(http, gw, op, "alice")
    before = await calls_received(http, faulty)
    call = asyncio.ensure_future(alice.call({"marker": "wait-approve"}))
    try:
        req = await pending_for(http, gw, op, "wait-approve")
        assert not call.done() and await calls_received(http, faulty) == before  # held, the caller waits
        started = asyncio.get_running_loop().time()
        assert (await admin(http, gw, op, "bob", "POST", f"/{req}/approve"))[0] == 200
        result = await asyncio.wait_for(call, timeout=15)
        # woken by the decision itself, not by the 5 s store poll
        assert asyncio.get_running_loop().time() - started < 4
    finally:
        call.cancel()
    assert "result" in result, result
    assert await calls_received(http, faulty) == before + 1
    _status, shown = await admin(http, gw, op, "bob", "GET", f"/{req}")
    assert shown["state"] == "released"


async def test_a_waiting_caller_hears_a_deny(
    waiting_gateway: RunningGateway, op: OidcProvider, faulty: ManagedProcess, http: aiohttp.ClientSession
) -> None:
    gw = waiting_gateway
    alice = await mcp(http, gw, op, "alice")
    before = await calls_received(http, faulty)
    call = asyncio.ensure_future(alice.call({"marker": "wait-deny"}))
    try:
        req = await pending_for(http, gw, op, "wait-deny")
        assert (await admin(http, gw, op, "bob", "POST", f"/{req}/deny", reason="no"))[0] == 200
        answer = await asyncio.wait_for(call, timeout=15)
    finally:
        call.cancel()
    assert answer["error"]["code"] == -32010 and req in answer["error"]["message"], answer
    assert await calls_received(http, faulty) == before


async def test_an_approval_can_grant_time_boxed_access_for_matching_arguments(
    gateway: RunningGateway, op: OidcProvider, faulty: ManagedProcess, http: aiohttp.ClientSession
) -> None:
    alice = await mcp(http, gateway, op, "alice")
    req = held_id(await alice.call({"table": "audit_2026"}, **{"Portcullis-Justification": "INC-7 cleanup"}))
    _status, shown = await admin(http, gateway, op, "bob", "GET", f"/{req}")
    assert shown["justification"] == "INC-7 cleanup"
    grant = {"minutes": 30, "arguments": {"table": "audit_*"}}
    status, body = await admin(http, gateway, op, "bob", "POST", f"/{req}/approve", reason="cleanup", grant=grant)
    assert status == 200 and body["state"] == "approved", body
    before = await calls_received(http, faulty)
    assert "result" in await alice.call({"table": "audit_2026"})  # the approved call
    assert "result" in await alice.call({"table": "audit_2025"})  # covered by the grant, no new request
    assert "result" in await alice.call({"table": "audit_2026"})  # again: the grant, not the spent approval
    assert await calls_received(http, faulty) == before + 3
    held_id(await alice.call({"table": "users"}))  # outside the grant's pattern: held as before
    bob = await mcp(http, gateway, op, "bob")
    assert (await bob.call({"table": "audit_1"}))["error"]["code"] == -32010  # the grant is alice's, not bob's
    assert await calls_received(http, faulty) == before + 3
    status, body = await admin(
        http, gateway, op, "bob", "POST", f"/{held_id(await alice.call({'t': 1}))}/deny", grant={"minutes": 5}
    )
    assert status == 400 and "only an approval" in body["message"]


async def test_break_glass_goes_through_with_a_reason_and_awaits_review(
    gateway: RunningGateway,
    waiting_gateway: RunningGateway,
    op: OidcProvider,
    faulty: ManagedProcess,
    http: aiohttp.ClientSession,
) -> None:
    glass = {"Portcullis-Break-Glass": "prod is down, INC-9"}
    # the module's main gateway has no break-glass group: the header changes nothing
    held_id(await (await mcp(http, gateway, op, "alice")).call({"glass": 1}, **glass))
    before = await calls_received(http, faulty)
    alice = await mcp(http, waiting_gateway, op, "alice")  # break_glass_groups: [oncall]
    assert "result" in await alice.call({"glass": 1}, **glass)
    assert await calls_received(http, faulty) == before + 1
    _status, listed = await admin(http, waiting_gateway, op, "bob", "GET", "?state=break_glass")
    row = next(a for a in listed["approvals"] if a["args_digest"] == call_digest({"glass": 1}))
    assert row["reason"] == "prod is down, INC-9" and row["decided_by"].startswith("break-glass by")
    status, _ = await admin(http, waiting_gateway, op, "alice", "POST", f"/{row['id']}/review")
    assert status == 403  # not her own review
    status, body = await admin(http, waiting_gateway, op, "bob", "POST", f"/{row['id']}/review", reason="justified")
    assert status == 200 and body["state"] == "reviewed"

    def recorded() -> bool:
        kinds = {r["kind"] for r in load_records(waiting_gateway.store) if r["direction"] == "gw"}
        return {"approval_break_glass", "approval_reviewed"} <= kinds

    await eventually(recorded, what="break-glass and review events in the record")


async def test_webhooks_are_told_with_retries_and_without_arguments(
    waiting_gateway: RunningGateway,
    receiver: Receiver,
    op: OidcProvider,
    http: aiohttp.ClientSession,
) -> None:
    gw = waiting_gateway
    secret = "sk_live_" + "9f" * 14
    alice = await mcp(http, gw, op, "alice")
    args = {"marker": "hooked", "api_key": secret}
    digest = call_digest(args)
    call = asyncio.ensure_future(alice.call(args))
    try:
        await eventually(
            lambda: any(b["approval"]["args_digest"] == digest for b in receiver.got("/hook")),
            within=15,
            what="the requested notification (after one failed delivery)",
        )
        (requested,) = [b for b in receiver.got("/hook") if b["approval"]["args_digest"] == digest]
        assert requested["event"] == "requested"
        req = requested["approval"]["id"]
        assert requested["url"].endswith(f"/admin/api/approvals/{req}") and requested["approval"]["approvers"] == [
            "eng"
        ]
        _status, shown = await admin(http, gw, op, "bob", "GET", f"/{req}")
        assert shown["arguments"]["arguments"]["marker"] == "hooked"  # approvers read the call, masked
        assert secret not in json.dumps(shown) and "[REDACTED:" in shown["arguments"]["arguments"]["api_key"]
        assert (await admin(http, gw, op, "bob", "POST", f"/{req}/approve"))[0] == 200
        assert "result" in await asyncio.wait_for(call, timeout=15)
    finally:
        call.cancel()
    await eventually(
        lambda: any(b["event"] == "approved" and b["approval"]["id"] == req for b in receiver.got("/hook")),
        within=15,
        what="the approved notification",
    )
    await eventually(
        lambda: any(b["event"] == "released" and b["approval"]["id"] == req for b in receiver.got("/hook")),
        within=15,
        what="the released notification (the approved call went through)",
    )
    await eventually(
        lambda: any(req in m["text"] for m in receiver.got("/slack/T1/B2/x")), within=15, what="the Slack message"
    )
    slack = [m for m in receiver.got("/slack/T1/B2/x") if req in m["text"]]
    assert isinstance(slack[0]["blocks"], list) and slack[0]["blocks"]
    everything = json.dumps(receiver.bodies)
    assert secret not in everything and "api_key" not in everything  # the arguments never leave (only their digest)

    def recorded() -> bool:
        return any(
            r["kind"] == "approval_notified" and req in (r["detail"] or "") and "after 2 attempts" in r["detail"]
            for r in load_records(gw.store)
        )

    await eventually(recorded, within=15, what="delivery recorded with the retry")
    assert not any(
        receiver.url.split("//")[1] in (r["detail"] or "") and "/slack/" in (r["detail"] or "")
        for r in load_records(gw.store)
    )  # the record names the receiver's origin, never its path


@pytest.fixture(scope="module")
def short_wait_gateway(
    op: OidcProvider, faulty: ManagedProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningGateway]:
    config = _config(tmp_path_factory.mktemp("gw-short"), op, faulty, approvals={"wait": 1, "progress_interval": 0.2})
    with _running(*config) as gw:
        yield gw


async def stream_call(mcp_: Mcp, args: dict[str, Any], token: str) -> list[dict[str, Any]]:
    """tools/call with a progress token; every message of the SSE answer, in order."""
    mcp_.n += 1
    h = {
        "Content-Type": "application/json",
        "Accept": ACCEPT,
        "Authorization": f"Bearer {mcp_.token}",
        "Mcp-Session-Id": mcp_.sid or "",
        "MCP-Protocol-Version": "2025-11-25",
    }
    params = {"name": "ok", "arguments": args, "_meta": {"progressToken": token}}
    body = {"jsonrpc": "2.0", "id": mcp_.n, "method": "tools/call", "params": params}
    async with mcp_.http.post(mcp_.url, json=body, headers=h) as r:
        assert r.headers["Content-Type"].startswith("text/event-stream")
        raw = await r.read()
    return [json.loads(line[6:]) for line in raw.split(b"\n") if line.startswith(b"data: ") and line[6:].strip()]


async def test_a_waiting_caller_with_a_progress_token_hears_progress_then_the_result(
    waiting_gateway: RunningGateway, op: OidcProvider, faulty: ManagedProcess, http: aiohttp.ClientSession
) -> None:
    gw = waiting_gateway
    alice = await mcp(http, gw, op, "alice")
    call = asyncio.ensure_future(stream_call(alice, {"marker": "progress"}, "tok-1"))
    try:
        req = await pending_for(http, gw, op, "progress")
        assert (await admin(http, gw, op, "bob", "POST", f"/{req}/approve"))[0] == 200
        messages = await asyncio.wait_for(call, timeout=15)
    finally:
        call.cancel()
    progress = [m for m in messages if m.get("method") == "notifications/progress"]
    assert progress and progress[0]["params"]["progressToken"] == "tok-1"
    assert progress[0]["params"]["message"] == f"awaiting approval {req}"
    assert "result" in messages[-1] and messages.index(progress[0]) < len(messages) - 1


async def test_at_the_bound_the_waiting_caller_gets_the_error_naming_the_request(
    short_wait_gateway: RunningGateway, op: OidcProvider, faulty: ManagedProcess, http: aiohttp.ClientSession
) -> None:
    gw = short_wait_gateway
    before = await calls_received(http, faulty)
    alice = await mcp(http, gw, op, "alice")
    started = asyncio.get_running_loop().time()
    messages = await asyncio.wait_for(stream_call(alice, {"marker": "bound"}, "tok-2"), timeout=15)
    took = asyncio.get_running_loop().time() - started
    progress = [m for m in messages if m.get("method") == "notifications/progress"]
    assert len(progress) >= 3 and [p["params"]["progress"] for p in progress] == list(range(1, len(progress) + 1))
    req = held_id(messages[-1])
    assert 0.9 <= took < 5 and await calls_received(http, faulty) == before
    # approved afterwards, the same call retried goes through once (also without a progress token)
    assert (await admin(http, gw, op, "bob", "POST", f"/{req}/approve"))[0] == 200
    assert "result" in await alice.call({"marker": "bound"})
    assert await calls_received(http, faulty) == before + 1


async def test_a_caller_who_cancels_while_waiting_withdraws_the_request(
    waiting_gateway: RunningGateway, op: OidcProvider, faulty: ManagedProcess, http: aiohttp.ClientSession
) -> None:
    gw = waiting_gateway
    alice = await mcp(http, gw, op, "alice")
    before = await calls_received(http, faulty)
    call = asyncio.ensure_future(alice.call({"marker": "cancel-me"}))
    try:
        req = await pending_for(http, gw, op, "cancel-me")
        h = {
            "Content-Type": "application/json",
            "Accept": ACCEPT,
            "Authorization": f"Bearer {alice.token}",
            "Mcp-Session-Id": alice.sid or "",
            "MCP-Protocol-Version": "2025-11-25",
        }
        note = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": alice.n}}
        async with http.post(alice.url, json=note, headers=h) as r:
            assert r.status == 202
        answer = await asyncio.wait_for(call, timeout=10)  # well before the 20 s wait
    finally:
        call.cancel()
    assert answer["error"]["data"]["withdrawn"] is True, answer
    _status, shown = await admin(http, gw, op, "bob", "GET", f"/{req}")
    assert shown["state"] == "withdrawn"
    status, body = await admin(http, gw, op, "bob", "POST", f"/{req}/approve")
    assert status == 409 and "withdrawn" in body["message"]
    assert await calls_received(http, faulty) == before


async def test_a_caller_who_hangs_up_while_waiting_withdraws_the_request(
    waiting_gateway: RunningGateway, op: OidcProvider, faulty: ManagedProcess, http: aiohttp.ClientSession
) -> None:
    gw = waiting_gateway
    before = await calls_received(http, faulty)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as own:  # alice's own connections
        alice = await mcp(own, gw, op, "alice")
        call = asyncio.ensure_future(alice.call({"marker": "hang-up"}))
        req = await pending_for(http, gw, op, "hang-up")
        call.cancel()  # the client gives up: its connection closes with the session below
        with contextlib.suppress(asyncio.CancelledError):
            await call

    async def withdrawn() -> bool:
        _status, shown = await admin(http, gw, op, "bob", "GET", f"/{req}")
        return bool(shown["state"] == "withdrawn")

    await eventually_async(withdrawn, 15, "the request withdrawn after the caller hung up")  # poll_interval is 5 s
    assert any(
        r["kind"] == "approval_withdrawn" and req in r["detail"] and "hung up" in r["detail"]
        for r in load_records(gw.store)
    )
    assert await calls_received(http, faulty) == before  # nothing reached the upstream


TASKS_POLICY = """\
version: 1
default: allow
rules:
  - id: oncall-simple-text-needs-approval
    hold: {groups: [oncall], tools: [test_simple_text], approvers: [eng]}
"""
V2026 = "2026-07-28"
TASKS_META = {
    "io.modelcontextprotocol/protocolVersion": V2026,
    "io.modelcontextprotocol/clientCapabilities": {"extensions": {"io.modelcontextprotocol/tasks": {}}},
    "io.modelcontextprotocol/clientInfo": {"name": "approvals-tasks", "version": "1"},
}


@pytest.fixture(scope="module")
def tasks_gateway(
    op: OidcProvider, fixture: ManagedProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningGateway]:
    # approvals.wait is set, and a client with tasks gets its task at once all the same
    config = _config(tmp_path_factory.mktemp("gw-tasks"), op, fixture, "fx", TASKS_POLICY, approvals={"wait": 30})
    with _running(*config) as gw:
        yield gw


async def rpc2026(
    http: aiohttp.ClientSession,
    gw: RunningGateway,
    token: str,
    mid: int,
    method: str,
    params: dict[str, Any],
    name: str,
) -> dict[str, Any]:
    body = {"jsonrpc": "2.0", "id": mid, "method": method, "params": {**params, "_meta": TASKS_META}}
    h = {
        "Content-Type": "application/json",
        "Accept": ACCEPT,
        "Authorization": f"Bearer {token}",
        "MCP-Protocol-Version": V2026,
        "Mcp-Method": method,
        "Mcp-Name": name,
    }
    async with http.post(gw.url("fx"), json=body, headers=h) as r:
        raw = await r.read()
    if not raw.startswith(b"{"):
        raw = next(line[6:] for line in raw.split(b"\n") if line.startswith(b"data: ") and b'"id"' in line)
    out: dict[str, Any] = json.loads(raw)
    return out


async def test_a_client_with_tasks_gets_a_working_task_then_the_result(
    tasks_gateway: RunningGateway, op: OidcProvider, http: aiohttp.ClientSession
) -> None:
    gw = tasks_gateway
    alice = await asyncio.to_thread(op.user_token, "alice", gw.url("fx"))
    bob = await asyncio.to_thread(op.user_token, "bob", gw.url("fx"))
    created = await rpc2026(
        http, gw, alice, 1, "tools/call", {"name": "test_simple_text", "arguments": {}}, "test_simple_text"
    )
    task = created["result"]
    assert task["resultType"] == "task" and task["status"] == "working", created
    assert task["statusMessage"].startswith("awaiting approval apr_")
    req = task["statusMessage"].removeprefix("awaiting approval ")
    tid = task["taskId"]
    got = await rpc2026(http, gw, alice, 2, "tasks/get", {"taskId": tid}, tid)
    assert got["result"]["status"] == "working"
    stolen = await rpc2026(http, gw, bob, 3, "tasks/get", {"taskId": tid}, tid)
    assert stolen["error"]["message"] == "Unknown taskId"  # not bob's task
    assert (await admin(http, gw, op, "bob", "POST", f"/{req}/approve"))[0] == 200

    done: dict[str, Any] = {}

    async def completed() -> bool:
        done.update(await rpc2026(http, gw, alice, 4, "tasks/get", {"taskId": tid}, tid))
        return bool(done["result"]["status"] == "completed")

    await eventually_async(completed, within=15, what="the task completed after approval")
    assert done["result"]["result"]["content"][0]["text"] == "This is a simple text response for testing."
    _status, shown = await admin(http, gw, op, "bob", "GET", f"/{req}")
    assert shown["state"] == "released"


async def test_a_denied_task_fails_and_a_cancelled_one_withdraws(
    tasks_gateway: RunningGateway, op: OidcProvider, http: aiohttp.ClientSession
) -> None:
    gw = tasks_gateway
    alice = await asyncio.to_thread(op.user_token, "alice", gw.url("fx"))
    first = await rpc2026(
        http, gw, alice, 1, "tools/call", {"name": "test_simple_text", "arguments": {"n": 1}}, "test_simple_text"
    )
    tid = first["result"]["taskId"]
    req = first["result"]["statusMessage"].removeprefix("awaiting approval ")
    assert (await admin(http, gw, op, "bob", "POST", f"/{req}/deny", reason="no"))[0] == 200
    failed: dict[str, Any] = {}

    async def is_failed() -> bool:
        failed.update(await rpc2026(http, gw, alice, 2, "tasks/get", {"taskId": tid}, tid))
        return bool(failed["result"]["status"] == "failed")

    await eventually_async(is_failed, within=15, what="the task failed after the deny")
    assert failed["result"]["error"]["code"] == -32010 and req in failed["result"]["error"]["message"]

    second = await rpc2026(
        http, gw, alice, 3, "tools/call", {"name": "test_simple_text", "arguments": {"n": 2}}, "test_simple_text"
    )
    tid2 = second["result"]["taskId"]
    req2 = second["result"]["statusMessage"].removeprefix("awaiting approval ")
    assert "result" in await rpc2026(http, gw, alice, 4, "tasks/cancel", {"taskId": tid2}, tid2)
    got = await rpc2026(http, gw, alice, 5, "tasks/get", {"taskId": tid2}, tid2)
    assert got["result"]["status"] == "cancelled"
    _status, shown = await admin(http, gw, op, "bob", "GET", f"/{req2}")
    assert shown["state"] == "withdrawn"


async def test_a_decision_through_another_replica_releases_the_held_call_within_a_second(
    op: OidcProvider, faulty: ManagedProcess, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """Two replicas on one PostgreSQL: alice's call waits on replica A, bob approves through replica C; the call
    goes on within a second. The store poll is set to 30 s, so only the database's notification can do that."""
    from portcullis.store.db import make_engine, upgrade
    from tests.support.postgres import pg_schema

    with pg_schema() as store:
        engine = make_engine(store)
        upgrade(engine)
        engine.dispose()
        replicas = []
        for name in ("a", "c"):
            where = tmp_path / name
            where.mkdir()
            path, _ = _config(where, op, faulty, approvals={"wait": 20, "poll_interval": 30}, recording={"chain": name})
            cfg = json.loads(path.read_text())
            path.write_text(json.dumps({**cfg, "store": store}))
            replicas.append(start_gateway(path, store))
        try:
            a, c = replicas
            alice = await mcp(http, a, op, "alice")
            before = await calls_received(http, faulty)
            call = asyncio.ensure_future(alice.call({"marker": "cross-replica"}))
            req = await pending_for(http, c, op, "cross-replica")  # listed through C: the book is shared
            assert not call.done()
            assert (await admin(http, c, op, "bob", "POST", f"/{req}/approve"))[0] == 200
            result = await asyncio.wait_for(call, timeout=1.0)
            assert "result" in result, result
            assert await calls_received(http, faulty) == before + 1
        finally:
            for gw in replicas:
                gw.proc.stop(timeout=10)


@pytest.fixture(scope="module")
def expiring_gateway(
    op: OidcProvider, faulty: ManagedProcess, receiver: Receiver, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningGateway]:
    path, store = _config(
        tmp_path_factory.mktemp("gw-expiring"),
        op,
        faulty,
        approvals={"ttl": 1, "webhooks": [{"url": f"{receiver.url}/expiry"}], "webhook_backoff": 0.05},
    )
    with _running(path, store) as gw:
        yield gw


async def test_a_request_nobody_decides_expires_and_the_webhooks_and_the_record_say_so(
    expiring_gateway: RunningGateway, receiver: Receiver, op: OidcProvider, http: aiohttp.ClientSession
) -> None:
    gw = expiring_gateway
    alice = await mcp(http, gw, op, "alice")
    req = held_id(await alice.call({"expire": "me"}))
    await eventually(
        lambda: any(b["event"] == "expired" and b["approval"]["id"] == req for b in receiver.got("/expiry")),
        within=15,
        what="the expired notification",
    )
    (told,) = [b for b in receiver.got("/expiry") if b["event"] == "expired"]
    assert told["approval"]["state"] == "expired" and told["approval"]["approvers"] == ["eng"]
    status, shown = await admin(http, gw, op, "bob", "GET", f"/{req}")
    assert status == 200 and shown["state"] == "expired"
    status, body = await admin(http, gw, op, "bob", "POST", f"/{req}/approve")
    assert status == 409 and "expired" in body["message"]  # too late to decide
    assert any(r["kind"] == "approval_expired" and req in r["detail"] for r in load_records(gw.store))
