"""The client's token never goes upstream; the gateway's own credential for that upstream does."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest

from tests.support.gateway import start_gateway, write_config
from tests.support.oidc import OidcProvider, running_oidc_provider
from tests.support.procs import ManagedProcess, running_process

pytestmark = [pytest.mark.e2e, pytest.mark.node]

FAULTY = Path(__file__).resolve().parents[1] / "fixtures" / "faulty_upstream.py"
ACCEPT = "application/json, text/event-stream"
INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
}


@pytest.fixture(scope="module")
def op(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcProvider]:
    with running_oidc_provider(tmp_path_factory.mktemp("op")) as provider:
        yield provider


@pytest.fixture
def faulty() -> Iterator[ManagedProcess]:
    with running_process([sys.executable, str(FAULTY), "--port", "0"], ready_timeout=30) as proc:
        yield proc


async def seen_authorizations(faulty: ManagedProcess) -> list[Any]:
    async with aiohttp.ClientSession() as h, h.get(faulty.ready_value.removesuffix("/mcp") + "/authorizations") as r:
        data: list[Any] = await r.json()
        return data


async def call_through(url: str, client_token: str) -> None:
    h = {"Content-Type": "application/json", "Accept": ACCEPT, "Authorization": f"Bearer {client_token}"}
    async with aiohttp.ClientSession() as http:
        async with http.post(url, json=INIT, headers=h) as r:
            assert r.status == 200, await r.text()
            sid = r.headers["Mcp-Session-Id"]
        call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "ok", "arguments": {}}}
        async with http.post(
            url, json=call, headers={**h, "Mcp-Session-Id": sid, "MCP-Protocol-Version": "2025-11-25"}
        ) as r:
            assert "fine" in await r.text()


async def test_a_secret_header_from_the_environment(op: OidcProvider, faulty: ManagedProcess, tmp_path: Path) -> None:
    auth = {"mode": "oidc", "issuers": [{"issuer": op.issuer}]}
    servers = {"up": {"url": faulty.ready_value, "headers_from_env": {"Authorization": "UP_TOKEN"}}}
    config, store = write_config(tmp_path, servers, auth=auth)
    gw = start_gateway(config, store, env={"UP_TOKEN": "Bearer gateway-own-upstream-secret"})
    try:
        client_token = op.user_token("alice", gw.url("up"))
        await call_through(gw.url("up"), client_token)
    finally:
        gw.proc.stop(timeout=10)
    seen = await seen_authorizations(faulty)
    assert seen and set(seen) == {"Bearer gateway-own-upstream-secret"}
    assert all(client_token not in (s or "") for s in seen)


async def test_oauth_client_credentials_for_the_upstream(
    op: OidcProvider, faulty: ManagedProcess, tmp_path: Path
) -> None:
    auth = {"mode": "oidc", "issuers": [{"issuer": op.issuer}]}
    oauth = {
        "token_url": op.discovery["token_endpoint"],
        "client_id": "portcullis-service",
        "client_secret_env": "UP_CLIENT_SECRET",
        "scope": "mcp:tools",
        "resource": faulty.ready_value,
    }
    servers = {"up": {"url": faulty.ready_value, "oauth": oauth}}
    config, store = write_config(tmp_path, servers, auth=auth)
    gw = start_gateway(config, store, env={"UP_CLIENT_SECRET": "portcullis-service-secret"})
    try:
        client_token = op.user_token("alice", gw.url("up"))
        await call_through(gw.url("up"), client_token)
    finally:
        gw.proc.stop(timeout=10)
    seen = await seen_authorizations(faulty)
    tokens = {s.removeprefix("Bearer ") for s in seen if s}
    assert len(tokens) == 1 and client_token not in tokens  # one token, reused, and not the client's
    claims = jwt.decode(tokens.pop(), options={"verify_signature": False})
    assert claims["sub"] == "portcullis-service" and claims["aud"] == faulty.ready_value
    assert json.dumps(claims)  # a real JWT from the provider
