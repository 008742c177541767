"""The client's token never goes upstream; the gateway's own credential for that upstream does."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest

from portcullis.config.model import ServerConfig
from portcullis.errors import UpstreamError
from portcullis.upstream.credentials import UpstreamCredentials
from tests.support.gateway import RunningGateway, start_gateway, write_config
from tests.support.oidc import OidcProvider
from tests.support.procs import ManagedProcess, running_process
from tests.support.raw import ACCEPT, INIT

pytestmark = [pytest.mark.e2e, pytest.mark.node]

FAULTY = Path(__file__).resolve().parents[1] / "fixtures" / "faulty_upstream.py"


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


# --- RFC 8693 token exchange: the upstream learns who the user is, and never sees the user's token ---------------

GATEWAY_CLIENT = {"client_id": "portcullis-gateway", "client_secret_env": "UP_CLIENT_SECRET"}
GATEWAY_SECRET = {"UP_CLIENT_SECRET": "portcullis-gateway-secret"}


def exchange_config(op: OidcProvider, **overrides: Any) -> dict[str, Any]:
    return {
        "grant": "token_exchange",
        "token_url": op.token_endpoint,
        **GATEWAY_CLIENT,
        "scope": "mcp:tools",
        **overrides,
    }


async def post_initialize(url: str, client_token: str) -> tuple[int, dict[str, Any]]:
    h = {"Content-Type": "application/json", "Accept": ACCEPT, "Authorization": f"Bearer {client_token}"}
    async with aiohttp.ClientSession() as http, http.post(url, json=INIT, headers=h) as r:
        return r.status, await r.json(content_type=None)


def create_api_key(gw: RunningGateway) -> str:
    argv = [sys.executable, "-m", "portcullis", "apikeys", "create", "batch", "--owner", "ops@example.test"]
    out = subprocess.run([*argv, "--config", str(gw.config_path)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


async def test_token_exchange_gives_the_upstream_the_callers_identity_never_the_callers_token(
    op: OidcProvider, faulty: ManagedProcess, tmp_path: Path
) -> None:
    """alice's calls reach the upstream with a token the provider issued for the upstream (sub alice, act the
    gateway), exchanged once and reused; bob gets his own; an API-key caller has nothing to exchange: refused."""
    upstream = faulty.ready_value
    auth = {"mode": "oidc", "issuers": [{"issuer": op.issuer}]}
    servers = {"up": {"url": upstream, "oauth": exchange_config(op)}}  # era: auto, resource: the upstream's url
    config, store = write_config(tmp_path, servers, auth=auth)
    before = len(await op.aio.exchanges())
    gw = start_gateway(config, store, env=GATEWAY_SECRET)
    try:
        alice = await op.aio.user_token("alice", gw.url("up"))
        bob = await op.aio.user_token("bob", gw.url("up"))
        await call_through(gw.url("up"), alice)  # initialize + tools/call
        await call_through(gw.url("up"), alice)  # a second session, same caller token: the exchange is reused
        alice_seen = [s for s in await seen_authorizations(faulty)]
        await call_through(gw.url("up"), bob)
        seen = await seen_authorizations(faulty)
        exchanges = (await op.aio.exchanges())[before:]

        api_key = await asyncio.to_thread(create_api_key, gw)
        status, answer = await post_initialize(gw.url("up"), api_key)
        assert status == 200 and answer["error"]["code"] == -32001, answer
        assert "no caller token to exchange" in answer["error"]["message"]
        assert api_key not in json.dumps(answer)
    finally:
        gw.proc.stop(timeout=10)
        output = gw.proc.output()

    # alice: four upstream requests, one exchanged token; bob: his own
    assert len(alice_seen) == 4 and len(set(alice_seen)) == 1, alice_seen
    alice_up = alice_seen[0].removeprefix("Bearer ")
    bob_up = {s.removeprefix("Bearer ") for s in seen[4:]}
    assert len(seen) == 6 and len(bob_up) == 1 and alice_up not in bob_up
    for original in (alice, bob):
        assert all(original not in (s or "") for s in seen), "a caller's own token reached the upstream"
        assert original not in output, "a caller's token was logged"

    claims = await op.aio.verify(alice_up, resource=upstream)  # signed by the provider, aud = the upstream
    assert claims["sub"] == "alice" and claims["aud"] == upstream
    assert claims["act"] == {"sub": "portcullis-gateway"} and claims["client_id"] == "portcullis-gateway"
    assert claims["groups"] == ["eng", "oncall"] and claims["scope"] == "mcp:tools"
    bob_claims = await op.aio.verify(bob_up.pop(), resource=upstream)
    assert bob_claims["sub"] == "bob" and bob_claims["act"] == {"sub": "portcullis-gateway"}

    # the provider saw exactly one exchange per caller token, from the gateway's client, for the upstream; the API
    # key never reached it
    assert [(e["ok"], e["client_id"], e["sub"], e["target"]) for e in exchanges] == [
        (True, "portcullis-gateway", "alice", upstream),
        (True, "portcullis-gateway", "bob", upstream),
    ]
    assert exchanges[0]["jti"] == claims["jti"]
    assert exchanges[0]["subject_jti"] == jwt.decode(alice, options={"verify_signature": False})["jti"]


@pytest.mark.parametrize(
    ("oauth", "why"),
    [
        pytest.param(
            {"client_id": "portcullis-service", "client_secret_env": "UP_CLIENT_SECRET"},
            "HTTP 400, invalid_request",
            id="client-not-allowed-to-exchange",
        ),
        pytest.param({"audience": "urn:example:nowhere"}, "HTTP 400, invalid_target", id="unknown-audience"),
    ],
)
async def test_a_refused_token_exchange_fails_closed(
    op: OidcProvider, faulty: ManagedProcess, tmp_path: Path, oauth: dict[str, str], why: str
) -> None:
    """The provider refuses: the client gets a clear JSON-RPC error for its request, the upstream sees nothing."""
    auth = {"mode": "oidc", "issuers": [{"issuer": op.issuer}]}
    servers = {"up": {"url": faulty.ready_value, "era": "session", "oauth": exchange_config(op, **oauth)}}
    config, store = write_config(tmp_path, servers, auth=auth)
    secret = "portcullis-service-secret" if oauth.get("client_id") == "portcullis-service" else None
    gw = start_gateway(config, store, env={"UP_CLIENT_SECRET": secret} if secret else GATEWAY_SECRET)
    try:
        alice = await op.aio.user_token("alice", gw.url("up"))
        status, answer = await post_initialize(gw.url("up"), alice)
    finally:
        gw.proc.stop(timeout=10)
    assert status == 200 and answer["id"] == 1 and "result" not in answer
    error = answer["error"]
    assert error["code"] == -32001
    assert error["message"] == (
        f"upstream 'up': its authorization server refused to exchange the caller's token ({why})"
    )
    assert alice not in json.dumps(answer)
    assert await seen_authorizations(faulty) == []  # nothing reached the upstream


def exchange_server(op: OidcProvider, upstream: str, **oauth: Any) -> ServerConfig:
    return ServerConfig.model_validate({"url": upstream, "oauth": exchange_config(op, **oauth)})


async def test_exchanges_are_single_flight_and_the_cache_is_bounded(
    op: OidcProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Concurrent requests of one caller share one exchange; the cache keeps at most cache_size caller tokens."""
    monkeypatch.setenv("UP_CLIENT_SECRET", "portcullis-gateway-secret")
    upstream = "http://127.0.0.1:9/mcp"
    alice = await op.aio.user_token("alice", "http://127.0.0.1:8/mcp/up")
    bob = await op.aio.user_token("bob", "http://127.0.0.1:8/mcp/up")
    async with aiohttp.ClientSession() as http:
        creds = UpstreamCredentials("up", exchange_server(op, upstream, cache_size=1), http)
        before = len(await op.aio.exchanges())
        first = await asyncio.wait_for(asyncio.gather(*(creds.headers(alice) for _ in range(8))), timeout=30)
        assert len({h["Authorization"] for h in first}) == 1
        assert len(await op.aio.exchanges()) == before + 1  # eight requests, one exchange

        assert (await creds.headers(alice)) == first[0]  # cached
        bob_headers = await creds.headers(bob)  # evicts alice (cache_size 1)
        again = await creds.headers(alice)  # exchanged anew
        assert again != first[0] and bob_headers != again
        log = (await op.aio.exchanges())[before:]
        assert [e["sub"] for e in log] == ["alice", "bob", "alice"] and all(e["target"] == upstream for e in log)

        with pytest.raises(UpstreamError, match="no caller token to exchange"):
            await creds.headers(None)


async def test_a_token_from_another_issuer_is_never_sent_to_the_token_endpoint(
    op: OidcProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    """subject_issuer: a caller's token from any other issuer fails closed before the provider is asked."""
    monkeypatch.setenv("UP_CLIENT_SECRET", "portcullis-gateway-secret")
    foreign = jwt.encode({"iss": "https://elsewhere.example", "sub": "alice"}, "k" * 32, algorithm="HS256")
    async with aiohttp.ClientSession() as http:
        cfg = exchange_server(op, "http://127.0.0.1:9/mcp", subject_issuer=op.issuer)
        creds = UpstreamCredentials("up", cfg, http)
        before = len(await op.aio.exchanges())
        with pytest.raises(UpstreamError, match="not from") as caught:
            await creds.headers(foreign)
        assert foreign not in caught.value.message
        assert len(await op.aio.exchanges()) == before
        alice = await op.aio.user_token("alice", "http://127.0.0.1:8/mcp/up")
        assert (await creds.headers(alice))["Authorization"].startswith("Bearer ")
