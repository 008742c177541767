"""Policy through the gateway with real principals from the OpenID provider: a matrix of principals x tools x
arguments (allow / deny / hold), list filtering, what the upstream never sees, decisions in the records, reload."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.gateway import RunningGateway, running_gateway
from tests.support.oidc import OidcProvider
from tests.support.procs import ManagedProcess
from tests.support.records import load_records
from tests.support.waiting import eventually, eventually_async

pytestmark = [pytest.mark.e2e, pytest.mark.node]

ACCEPT = "application/json, text/event-stream"
POLICY = """\
version: 1
default: deny
rules:
  - id: lists
    allow: {groups: [eng, oncall, auditors], methods: [tools/list, prompts/list, resources/list]}
  - id: eng-echo
    allow: {groups: [eng], tools: [echo, test_simple_text]}
  - id: eng-progress-small
    allow: {groups: [eng], tools: [slow_progress], when: 'int(arguments.steps) <= 3'}
  - id: oncall-big-progress-held
    hold: {groups: [oncall], tools: [slow_progress], when: 'int(arguments.steps) > 3', approvers: [sre]}
  - id: nobody-errors
    deny: {tools: [test_error_handling]}
  - id: auditors-read
    allow: {groups: [auditors], resources: ["test://*"]}
"""


@pytest.fixture(scope="module")
def policy_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("policy") / "policy.yaml"
    p.write_text(POLICY)
    return p


@pytest.fixture(scope="module")
def gateway(
    op: OidcProvider, fixture: ManagedProcess, policy_file: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningGateway]:
    auth = {"mode": "oidc", "issuers": [{"issuer": op.issuer}]}
    policy = {"file": str(policy_file), "reload_interval": 0.2}
    with running_gateway(
        tmp_path_factory.mktemp("gw"), {"fx": {"url": fixture.ready_value}}, auth=auth, policy=policy
    ) as gw:
        yield gw


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as s:
        yield s


class Session:
    def __init__(self, http: aiohttp.ClientSession, url: str, token: str) -> None:
        self.http, self.url, self.token = http, url, token
        self.sid: str | None = None
        self.n = 0

    async def rpc(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        self.n += 1
        body = {"jsonrpc": "2.0", "id": self.n, "method": method, "params": params or {}}
        h = {"Content-Type": "application/json", "Accept": ACCEPT, "Authorization": f"Bearer {self.token}"}
        if self.sid:
            h |= {"Mcp-Session-Id": self.sid, "MCP-Protocol-Version": "2025-11-25"}
        async with self.http.post(self.url, json=body, headers=h) as r:
            self.sid = self.sid or r.headers.get("Mcp-Session-Id")
            raw = await r.read()
        if raw.startswith(b"{"):
            msg: dict[str, Any] = json.loads(raw)
            return msg
        datas = [json.loads(line[6:]) for line in raw.split(b"\n") if line.startswith(b"data: ") and line[6:].strip()]
        return next(m for m in datas if m.get("id") == self.n)

    async def open(self) -> Session:
        await self.rpc(
            "initialize",
            {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": "policy-test", "version": "1"},
            },
        )
        return self


async def session(http: aiohttp.ClientSession, gw: RunningGateway, op: OidcProvider, user: str) -> Session:
    return await Session(http, gw.url("fx"), op.user_token(user, gw.url("fx"))).open()


def outcome(msg: dict[str, Any]) -> str:
    if "result" in msg:
        return "allow"
    code = msg["error"]["code"]
    return {-32010: "deny", -32011: "hold"}.get(code, f"error {code}")


MATRIX = [
    # user, tool, arguments, expected
    ("alice", "echo", {"text": "hi"}, "allow"),  # eng
    ("bob", "echo", {"text": "hi"}, "allow"),  # eng
    ("carol", "echo", {"text": "hi"}, "deny"),  # auditors: no tool rule
    ("dave", "echo", {"text": "hi"}, "deny"),  # no groups: default deny
    ("bob", "slow_progress", {"steps": 2, "delay_ms": 1}, "allow"),
    ("bob", "slow_progress", {"steps": 5, "delay_ms": 1}, "deny"),  # eng may not run long ones
    ("alice", "slow_progress", {"steps": 5, "delay_ms": 1}, "hold"),  # oncall: held for approval
    ("alice", "slow_progress", {"steps": 2, "delay_ms": 1}, "allow"),
    ("bob", "slow_progress", {"delay_ms": 1}, "deny"),  # missing argument: the condition fails closed
    ("alice", "test_error_handling", {}, "deny"),  # deny beats allow
]


@pytest.mark.parametrize(("user", "tool", "args", "expected"), MATRIX)
async def test_policy_matrix(
    gateway: RunningGateway,
    op: OidcProvider,
    http: aiohttp.ClientSession,
    user: str,
    tool: str,
    args: dict[str, Any],
    expected: str,
) -> None:
    s = await session(http, gateway, op, user)
    msg = await s.rpc("tools/call", {"name": tool, "arguments": args})
    assert outcome(msg) == expected, msg
    recs = [r for r in load_records(gateway.store) if r["session_id"] == s.sid and r["method"] == "tools/call"]
    req = next(r for r in recs if r["direction"] == "c2s")
    assert req["decision"] == expected
    if expected != "allow":
        # the upstream never saw it: the only answer is the gateway's, recorded as denied by the authz stage
        assert [r["outcome"] for r in recs if r["direction"] == "s2c"] == ["denied"]


async def test_resources_by_policy(gateway: RunningGateway, op: OidcProvider, http: aiohttp.ClientSession) -> None:
    carol = await session(http, gateway, op, "carol")
    assert outcome(await carol.rpc("resources/read", {"uri": "test://static-text"})) == "allow"
    bob = await session(http, gateway, op, "bob")
    assert outcome(await bob.rpc("resources/read", {"uri": "test://static-text"})) == "deny"


async def test_lists_are_filtered_to_the_caller(
    gateway: RunningGateway, op: OidcProvider, http: aiohttp.ClientSession
) -> None:
    bob = await session(http, gateway, op, "bob")
    tools = {t["name"] for t in (await bob.rpc("tools/list"))["result"]["tools"]}
    assert tools == {"echo", "test_simple_text", "slow_progress"}
    alice = await session(http, gateway, op, "alice")
    tools = {t["name"] for t in (await alice.rpc("tools/list"))["result"]["tools"]}
    assert tools == {"echo", "test_simple_text", "slow_progress"}  # held counts as usable
    carol = await session(http, gateway, op, "carol")
    assert (await carol.rpc("tools/list"))["result"]["tools"] == []
    dave = await session(http, gateway, op, "dave")
    assert outcome(await dave.rpc("tools/list")) == "deny"


async def test_policy_reloads_and_a_broken_file_keeps_the_last_good(
    gateway: RunningGateway, op: OidcProvider, http: aiohttp.ClientSession, policy_file: Path
) -> None:
    dave = await session(http, gateway, op, "dave")
    assert outcome(await dave.rpc("tools/call", {"name": "echo", "arguments": {"text": "x"}})) == "deny"
    await asyncio.to_thread(
        policy_file.write_text, POLICY + "  - id: dave-echo\n    allow: {users: [dave], tools: [echo]}\n"
    )

    async def reloaded() -> bool:
        return outcome(await dave.rpc("tools/call", {"name": "echo", "arguments": {"text": "x"}})) == "allow"

    await eventually_async(reloaded, what="policy reload")
    broken = "version: 1\nrules:\n  - id: broken\n    allow: {tools: [echo], when: 'nonsense(('}\n"
    await asyncio.to_thread(policy_file.write_text, broken)
    await eventually(lambda: any(r["kind"] == "policy_refused" for r in load_records(gateway.store)), within=10)
    assert outcome(await dave.rpc("tools/call", {"name": "echo", "arguments": {"text": "x"}})) == "allow"
    await asyncio.to_thread(policy_file.write_text, POLICY)
    await eventually(lambda: sum(r["kind"] == "policy_reload" for r in load_records(gateway.store)) >= 2, within=10)
