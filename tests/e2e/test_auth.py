"""Authentication at the gateway against a real OpenID provider: every refusal, key rotation, session binding,
RFC 9728 discovery, and the official Python SDK's own OAuth login through the gateway."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.parse
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import httpx2
import pytest
from mcp.client import Client
from mcp.client.auth import OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientMetadata

from tests.support.gateway import RunningGateway, running_gateway
from tests.support.oauth_storage import MemoryTokenStorage
from tests.support.oidc import OidcProvider
from tests.support.procs import ManagedProcess
from tests.support.raw import ACCEPT, INIT
from tests.support.records import load_records
from tests.support.waiting import eventually_async

pytestmark = [pytest.mark.e2e, pytest.mark.node]


@pytest.fixture(scope="module")
def gateway(
    op: OidcProvider, fixture: ManagedProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningGateway]:
    # "made:up" is not a scope the provider accepts: it must not be advertised (clients copy advertised scopes)
    auth = {"mode": "oidc", "issuers": [{"issuer": op.issuer, "scopes_supported": ["mcp:tools", "made:up"]}]}
    servers = {"fixture": {"url": fixture.ready_value}, "other": {"url": fixture.ready_value}}
    with running_gateway(tmp_path_factory.mktemp("gw"), servers, auth=auth) as gw:
        yield gw


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as s:
        yield s


async def post(http: aiohttp.ClientSession, url: str, body: dict[str, Any], **headers: str) -> aiohttp.ClientResponse:
    async with http.post(
        url, json=body, headers={"Content-Type": "application/json", "Accept": ACCEPT, **headers}
    ) as r:
        await r.read()
        return r


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_no_token_gets_401_with_resource_metadata(gateway: RunningGateway, http: aiohttp.ClientSession) -> None:
    r = await post(http, gateway.url("fixture"), INIT)
    assert r.status == 401
    challenge = r.headers["WWW-Authenticate"]
    assert challenge.startswith("Bearer ")
    assert f'resource_metadata="{gateway.base}/.well-known/oauth-protected-resource/mcp/fixture"' in challenge


async def test_protected_resource_metadata(
    gateway: RunningGateway, op: OidcProvider, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{gateway.base}/.well-known/oauth-protected-resource/mcp/fixture") as r:
        doc = await r.json()
    assert doc["resource"] == gateway.url("fixture")
    assert doc["authorization_servers"] == [op.issuer]  # exactly as the issuer spells it
    assert doc["scopes_supported"] == ["mcp:tools"]
    async with http.get(f"{gateway.base}/.well-known/oauth-protected-resource") as r:
        root = await r.json()
    assert root["resource"] == gateway.base and root["authorization_servers"] == [op.issuer]


NEGATIVE = [
    "expired",
    "not_yet_valid",
    "wrong_audience",
    "audience_other_resource",
    "no_audience",
    "wrong_issuer",
    "issuer_trailing_slash",
    "no_expiry",
    "unknown_kid",
    "bad_signature",
    "tampered_payload",
    "alg_none",
    "alg_hs256_public_key_as_secret",
    "id_token_not_access_token",
]


@pytest.mark.parametrize("name", NEGATIVE)
async def test_bad_tokens_are_refused(
    gateway: RunningGateway, op: OidcProvider, http: aiohttp.ClientSession, name: str
) -> None:
    tokens = op.negative_tokens(gateway.url("fixture"))
    r = await post(http, gateway.url("fixture"), INIT, **bearer(tokens[name]))
    assert r.status == 401, name
    assert "resource_metadata=" in r.headers["WWW-Authenticate"]
    assert 'error="invalid_token"' in r.headers["WWW-Authenticate"]


async def test_malformed_tokens_are_refused(gateway: RunningGateway, http: aiohttp.ClientSession) -> None:
    for value in ("Bearer", "Bearer not-a-jwt", "Basic dXNlcjpwYXNz", "Bearer a.b.c"):
        r = await post(http, gateway.url("fixture"), INIT, Authorization=value)
        assert r.status == 401, value


async def test_a_valid_token_goes_through_and_names_the_principal(
    gateway: RunningGateway, op: OidcProvider, http: aiohttp.ClientSession
) -> None:
    token = op.user_token("alice", gateway.url("fixture"))
    r = await post(http, gateway.url("fixture"), INIT, **bearer(token))
    assert r.status == 200
    sid = r.headers["Mcp-Session-Id"]
    recs = [x for x in load_records(gateway.store) if x["session_id"] == sid]
    principal = json.loads(recs[0]["principal"])
    assert principal["sub"] == "alice" and principal["groups"] == ["eng", "oncall"] and principal["iss"] == op.issuer
    # a token for another endpoint of the same gateway is refused here (audience = the endpoint)
    other = op.user_token("alice", gateway.url("other"))
    r = await post(http, gateway.url("fixture"), INIT, **bearer(other))
    assert r.status == 401
    # no token ever reaches the store
    assert all(
        token not in (x["detail"] or "") and token.encode() not in (x["payload"] or b"")
        for x in load_records(gateway.store)
    )


async def test_client_credentials_tokens_work_too(
    gateway: RunningGateway, op: OidcProvider, http: aiohttp.ClientSession
) -> None:
    token = op.client_credentials_token(gateway.url("fixture"))
    r = await post(http, gateway.url("fixture"), INIT, **bearer(token))
    assert r.status == 200


async def test_a_session_is_bound_to_its_principal(
    gateway: RunningGateway, op: OidcProvider, http: aiohttp.ClientSession
) -> None:
    alice = op.user_token("alice", gateway.url("fixture"))
    bob = op.user_token("bob", gateway.url("fixture"))
    r = await post(http, gateway.url("fixture"), INIT, **bearer(alice))
    sid = r.headers["Mcp-Session-Id"]
    call = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
    h = {"Mcp-Session-Id": sid, "MCP-Protocol-Version": "2025-11-25"}
    r = await post(http, gateway.url("fixture"), call, **h, **bearer(bob))
    assert r.status == 403
    r = await post(http, gateway.url("fixture"), call, **h, **bearer(alice))
    assert r.status == 200


async def test_key_rotation_is_picked_up_without_restart(
    gateway: RunningGateway, op: OidcProvider, http: aiohttp.ClientSession
) -> None:
    before = op.user_token("bob", gateway.url("fixture"))
    assert (await post(http, gateway.url("fixture"), INIT, **bearer(before))).status == 200
    op.rotate_keys(keep_old=False)
    after = op.user_token("bob", gateway.url("fixture"))
    r = await post(http, gateway.url("fixture"), INIT, **bearer(after))
    assert r.status == 200  # the unknown kid made the gateway fetch the new keys once


async def test_unknown_kids_do_not_cause_a_refetch_storm(
    gateway: RunningGateway, op: OidcProvider, http: aiohttp.ClientSession
) -> None:
    def fetches() -> int:
        return sum("loaded" in line and "signing keys" in line for line in gateway.proc.stderr_tail)

    forged = op.negative_tokens(gateway.url("fixture"))["unknown_kid"]
    before = fetches()
    statuses = await asyncio.gather(*(post(http, gateway.url("fixture"), INIT, **bearer(forged)) for _ in range(50)))
    assert {r.status for r in statuses} == {401}
    statuses = await asyncio.gather(*(post(http, gateway.url("fixture"), INIT, **bearer(forged)) for _ in range(50)))
    assert {r.status for r in statuses} == {401}
    assert fetches() - before <= 1  # one bounded refetch for the unknown kid, then it is known to be unknown


async def test_python_sdk_discovers_logs_in_and_calls_through_the_gateway(
    gateway: RunningGateway, op: OidcProvider, tmp_path: Path
) -> None:
    """The SDK's own OAuth: 401 → RFC 9728 metadata → provider discovery → dynamic registration → code + PKCE
    (the browser step driven headlessly) → token for the endpoint → tools through the gateway."""
    url = gateway.url("fixture")
    seen: dict[str, Any] = {}

    async def redirect_handler(auth_url: str) -> None:
        seen["authorization_url"] = auth_url

    async def callback_handler() -> AuthorizationCodeResult:
        result = await op.aio.authorize(seen["authorization_url"], "alice")
        return AuthorizationCodeResult(code=result.code or "", state=result.state, iss=result.iss)

    auth = OAuthClientProvider(
        url,
        OAuthClientMetadata(redirect_uris=["http://127.0.0.1:33419/callback"], client_name="sdk-through-gateway"),
        MemoryTokenStorage(),
        redirect_handler,
        callback_handler,
    )
    async with asyncio.timeout(60):
        async with (
            httpx2.AsyncClient(auth=auth, timeout=20) as h,
            Client(streamable_http_client(url, http_client=h), mode="legacy") as client,
        ):
            names = {t.name for t in (await client.list_tools()).tools}
            result = await client.call_tool("echo", {"text": "logged in"})
    assert "echo" in names
    assert result.content[0].text == "logged in"  # type: ignore[union-attr]
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(seen["authorization_url"]).query))
    assert query["resource"] == url and query["code_challenge_method"] == "S256"


async def test_insufficient_scope_gets_403(
    op: OidcProvider, fixture: ManagedProcess, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    auth = {"mode": "oidc", "issuers": [{"issuer": op.issuer}], "required_scopes": ["mcp:admin"]}
    with running_gateway(tmp_path, {"fixture": {"url": fixture.ready_value}}, auth=auth) as gw:
        token = op.user_token("alice", gw.url("fixture"))
        r = await post(http, gw.url("fixture"), INIT, **bearer(token))
    assert r.status == 403
    challenge = r.headers["WWW-Authenticate"]
    assert 'error="insufficient_scope"' in challenge and 'scope="mcp:admin"' in challenge


async def test_dev_issuer_tokens_from_the_cli(
    fixture: ManagedProcess, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """The embedded default needs no identity provider: `portcullis token` mints, the gateway trusts its own issuer."""
    import subprocess
    import sys

    key = tmp_path / "dev.jwk"
    auth = {"mode": "oidc", "dev_issuer": {"enabled": True, "key_file": str(key)}}
    with running_gateway(tmp_path, {"fixture": {"url": fixture.ready_value}}, auth=auth) as gw:

        def cli_token(*extra: str) -> str:
            out = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "portcullis",
                    "token",
                    "--config",
                    str(gw.config_path),
                    "--url",
                    gw.base,
                    "--user",
                    "alice",
                    "--groups",
                    "eng,oncall",
                    *extra,
                ],
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
            )
            return out.stdout.strip()

        r = await post(http, gw.url("fixture"), INIT, **bearer(cli_token()))
        assert r.status == 200
        sid = r.headers["Mcp-Session-Id"]
        r = await post(http, gw.url("fixture"), INIT, **bearer(cli_token("--server", "fixture")))
        assert r.status == 200
        recs = [x for x in load_records(gw.store) if x["session_id"] == sid]
        assert json.loads(recs[0]["principal"])["groups"] == ["eng", "oncall"]
        async with http.get(f"{gw.base}/dev-issuer/jwks.json") as resp:
            jwks = await resp.json()
        assert "d" not in jwks["keys"][0]  # only the public half is published
    assert oct(key.stat().st_mode & 0o777) == "0o600"


async def test_api_keys_work_and_revocation_is_refused(
    gateway: RunningGateway, op: OidcProvider, http: aiohttp.ClientSession
) -> None:
    """Machine identities: a key created with the CLI works at once; revoked, it is refused (401)."""
    import subprocess
    import sys

    def cli(*args: str) -> str:
        return subprocess.run(
            [sys.executable, "-m", "portcullis", "apikeys", *args, "--config", str(gateway.config_path)],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout

    token = (
        await asyncio.to_thread(
            cli, "create", "nightly-batch", "--owner", "data-team@example.com", "--groups", "svc,eng"
        )
    ).strip()
    assert token.startswith("pcl_")
    r = await post(http, gateway.url("fixture"), INIT, **bearer(token))
    assert r.status == 200
    sid = r.headers["Mcp-Session-Id"]
    rec = next(x for x in load_records(gateway.store) if x["session_id"] == sid)
    principal = json.loads(rec["principal"])
    assert principal["sub"] == "apikey:nightly-batch" and principal["owner"] == "data-team@example.com"
    assert principal["groups"] == ["eng", "svc"] and principal["kind"] == "apikey"
    listing = await asyncio.to_thread(cli, "list")
    assert "nightly-batch" in listing and token not in listing
    kid = token.removeprefix("pcl_").split("_")[0]
    await asyncio.to_thread(cli, "revoke", kid)

    async def refused() -> bool:
        return (await post(http, gateway.url("fixture"), INIT, **bearer(token))).status == 401

    await eventually_async(refused, within=10, what="revoked key refused")
    wrong = token[:-4] + "AAAA"
    assert (await post(http, gateway.url("fixture"), INIT, **bearer(wrong))).status == 401
    kinds = [x["kind"] for x in load_records(gateway.store)]
    assert "apikey_created" in kinds and "apikey_revoked" in kinds
    # the store never holds the key itself
    assert all(
        token.encode() not in (x["payload"] or b"") and token not in (x["detail"] or "")
        for x in load_records(gateway.store)
    )


async def test_task_ids_are_bound_to_their_principal(
    gateway: RunningGateway, op: OidcProvider, http: aiohttp.ClientSession
) -> None:
    """A task the upstream minted for alice (2026-07-28 tasks extension) cannot be read or cancelled by bob."""
    meta = {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {"extensions": {"io.modelcontextprotocol/tasks": {}}},
    }

    def headers(token: str, method: str, name: str) -> dict[str, str]:
        return {"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": method, "Mcp-Name": name, **bearer(token)}

    async def rpc(token: str, mid: int, method: str, params: dict[str, Any], name: str) -> dict[str, Any]:
        body = {"jsonrpc": "2.0", "id": mid, "method": method, "params": {**params, "_meta": meta}}
        h = {"Content-Type": "application/json", "Accept": ACCEPT, **headers(token, method, name)}
        async with http.post(gateway.url("fixture"), json=body, headers=h) as r:
            raw = await r.read()
        if raw.startswith(b"{"):
            out: dict[str, Any] = json.loads(raw)
            return out
        datas = [json.loads(line[6:]) for line in raw.split(b"\n") if line.startswith(b"data: ") and line[6:].strip()]
        return next(m for m in datas if m.get("id") == mid)

    alice = op.user_token("alice", gateway.url("fixture"))
    bob = op.user_token("bob", gateway.url("fixture"))
    created = await rpc(alice, 1, "tools/call", {"name": "slow_compute", "arguments": {"seconds": 5}}, "slow_compute")
    task_id = created["result"]["taskId"]
    stolen = await rpc(bob, 2, "tasks/get", {"taskId": task_id}, task_id)
    assert stolen["error"]["code"] == -32010 and "another principal" in stolen["error"]["message"]
    stolen = await rpc(bob, 3, "tasks/cancel", {"taskId": task_id}, task_id)
    assert stolen["error"]["code"] == -32010
    own = await rpc(alice, 4, "tasks/get", {"taskId": task_id}, task_id)
    assert own["result"]["taskId"] == task_id


async def test_typescript_sdk_client_with_a_bearer_token(gateway: RunningGateway, op: OidcProvider) -> None:
    from tests.e2e.test_ts_client import run_ts_client

    token = op.user_token("bob", gateway.url("fixture"))
    marker = f"ts-auth-{time.time_ns()}"
    code, _seconds, obs, stderr = await asyncio.to_thread(
        run_ts_client, "fixture", gateway.url("fixture"), marker, env={"TS_CLIENT_BEARER": token}
    )
    assert code == 0 and not obs["timedOut"], stderr[-2000:]
    assert not obs["errors"], obs["errors"]
    recs = [r for r in load_records(gateway.store) if marker.encode() in (r["payload"] or b"")]
    assert recs and all(json.loads(r["principal"])["sub"] == "bob" for r in recs)


async def test_a_task_minted_through_one_replica_is_bound_on_every_replica(
    op: OidcProvider, fixture: ManagedProcess, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """Two replicas on one PostgreSQL: alice's task, minted through A, is refused to bob on B (B never saw it: the
    binding is in the store, committed with the response that carried the id) and given to alice there."""
    import json as _json

    from portcullis.store.db import make_engine, upgrade
    from tests.support.gateway import start_gateway, write_config
    from tests.support.postgres import pg_schema

    meta = {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {"extensions": {"io.modelcontextprotocol/tasks": {}}},
    }

    async def rpc(gw: RunningGateway, user: str, mid: int, method: str, params: dict[str, Any], name: str) -> Any:
        token = await asyncio.to_thread(op.user_token, user, gw.url("fixture"))
        body = {"jsonrpc": "2.0", "id": mid, "method": method, "params": {**params, "_meta": meta}}
        h = {"Content-Type": "application/json", "Accept": ACCEPT, "MCP-Protocol-Version": "2026-07-28"}
        h |= {"Mcp-Method": method, "Mcp-Name": name, **bearer(token)}
        async with http.post(gw.url("fixture"), json=body, headers=h) as r:
            raw = await r.read()
        if raw.startswith(b"{"):
            return json.loads(raw)
        datas = [json.loads(ln[6:]) for ln in raw.split(b"\n") if ln.startswith(b"data: ") and ln[6:].strip()]
        return next(m for m in datas if m.get("id") == mid)

    with pg_schema() as store:
        engine = make_engine(store)
        upgrade(engine)
        engine.dispose()
        replicas = []
        try:
            for name in ("a", "b"):
                (tmp_path / name).mkdir()
                config, _ = write_config(
                    tmp_path / name,
                    {"fixture": {"url": fixture.ready_value}},
                    auth={"mode": "oidc", "issuers": [{"issuer": op.issuer}]},
                    recording={"chain": name},
                )
                config.write_text(_json.dumps({**_json.loads(config.read_text()), "store": store}))
                replicas.append(start_gateway(config, store))
            a, b = replicas
            created = await rpc(
                a, "alice", 1, "tools/call", {"name": "slow_compute", "arguments": {"seconds": 5}}, "slow_compute"
            )
            task_id = created["result"]["taskId"]
            stolen = await rpc(b, "bob", 2, "tasks/get", {"taskId": task_id}, task_id)
            assert stolen["error"]["code"] == -32010 and "another principal" in stolen["error"]["message"], stolen
            own = await rpc(b, "alice", 3, "tasks/get", {"taskId": task_id}, task_id)
            assert own["result"]["taskId"] == task_id
        finally:
            for gw in replicas:
                gw.proc.stop(timeout=10)
