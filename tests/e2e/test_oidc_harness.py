"""The OpenID provider harness (tests/node/oidc_provider.mjs via tests/support/oidc.py) does what gateway tests rely on.

A real ``oidc-provider`` on loopback: discovery, dynamic registration of a public client, the authorization-code flow
with PKCE and RFC 8707 resource indicators driven headlessly, client credentials, key rotation, and forged tokens for
negative tests. Tokens are checked with PyJWT the way the gateway must check them (signature against the published
JWKS, ``iss`` and ``aud`` compared exactly). The last test runs the official MCP Python SDK's OAuth client against it.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import jwt
import pytest
import uvicorn
from mcp.client import Client
from mcp.client.auth import OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import MCPServer
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientMetadata

from tests.support.everything import listening_sockets
from tests.support.oauth_storage import MemoryTokenStorage
from tests.support.oidc import (
    OidcError,
    OidcProvider,
    async_running_oidc_provider,
    pkce_pair,
    running_oidc_provider,
)

pytestmark = [pytest.mark.e2e, pytest.mark.node]

RESOURCE = "http://127.0.0.1:8080/mcp/demo"


@pytest.fixture(scope="module")
def op(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcProvider]:
    """One provider for the tests that do not change its state (keys, users)."""
    with running_oidc_provider(tmp_path_factory.mktemp("oidc")) as provider:
        yield provider


def _claims(token: str) -> dict[str, Any]:
    return dict(jwt.decode(token, options={"verify_signature": False}))


def test_listens_on_loopback_only(op: OidcProvider) -> None:
    port = int(op.issuer.rsplit(":", 1)[1])
    assert listening_sockets(op.proc.pid) == [("127.0.0.1", port)]


def test_discovery_document(op: OidcProvider) -> None:
    d = op.discovery
    assert d["issuer"] == op.issuer
    assert op.issuer.startswith("http://127.0.0.1:") and not op.issuer.endswith("/")
    assert d["jwks_uri"] == f"{op.issuer}/jwks"
    assert d["authorization_endpoint"] == f"{op.issuer}/auth"
    assert d["token_endpoint"] == f"{op.issuer}/token"
    assert d["registration_endpoint"] == f"{op.issuer}/reg"
    assert d["code_challenge_methods_supported"] == ["S256"]
    assert d["response_types_supported"] == ["code"]
    assert {"authorization_code", "refresh_token", "client_credentials"} <= set(d["grant_types_supported"])
    assert "implicit" not in d["grant_types_supported"]
    assert {"openid", "profile", "email", "groups", "mcp:tools", "offline_access"} <= set(d["scopes_supported"])
    assert {"none", "client_secret_basic"} <= set(d["token_endpoint_auth_methods_supported"])
    assert d["authorization_response_iss_parameter_supported"] is True
    assert {"groups", "realm_access", "email", "name"} <= set(d["claims_supported"])

    assert op.get("/.well-known/oauth-authorization-server") == (200, d)  # RFC 8414 location, same document

    keys = op.jwks()["keys"]
    assert {(k["kty"], k["alg"], k["use"]) for k in keys} == {("RSA", "RS256", "sig"), ("EC", "ES256", "sig")}
    assert all("d" not in k for k in keys), "the public JWKS must not leak private key members"


def test_user_token_for_alice(op: OidcProvider) -> None:
    client = op.register_client()
    response = op.user_token_response("alice", RESOURCE, client=client)
    token = response["access_token"]

    header = jwt.get_unverified_header(token)
    assert header["alg"] == "RS256"
    assert header["typ"] == "at+jwt"
    assert header["kid"] in {k["kid"] for k in op.jwks()["keys"]}

    claims = op.verify(token, RESOURCE)  # signature (JWKS), iss and aud exact, exp/iat present
    assert claims["iss"] == op.issuer
    assert claims["aud"] == RESOURCE
    assert claims["sub"] == "alice"
    assert claims["groups"] == ["eng", "oncall"]
    assert claims["realm_access"] == {"roles": ["mcp-user", "mcp-admin"]}
    assert claims["email"] == "alice@example.test"
    assert claims["client_id"] == client.client_id
    assert claims["scope"] == "mcp:tools"  # only resource scopes; OIDC scopes stay out of the access token
    assert claims["exp"] - claims["iat"] == 600 == response["expires_in"]
    assert "nbf" not in claims

    assert response["token_type"] == "Bearer"
    assert response["scope"] == "mcp:tools"
    id_token = _claims(response["id_token"])
    assert id_token["aud"] == client.client_id and id_token["iss"] == op.issuer
    assert id_token["groups"] == ["eng", "oncall"]


@pytest.mark.parametrize(("user", "groups"), [("bob", ["eng"]), ("carol", ["auditors"]), ("dave", [])])
def test_user_tokens_carry_each_users_groups(op: OidcProvider, user: str, groups: list[str]) -> None:
    claims = op.verify(op.user_token(user, RESOURCE, scopes="mcp:tools"), RESOURCE)
    assert claims["sub"] == user
    assert claims["groups"] == groups


def test_client_credentials_token(op: OidcProvider) -> None:
    client_id, _ = op.service_client
    response = op.client_credentials_response(RESOURCE)
    token = response["access_token"]
    assert jwt.get_unverified_header(token)["typ"] == "at+jwt"
    claims = op.verify(token, RESOURCE)
    assert claims["iss"] == op.issuer
    assert claims["aud"] == RESOURCE
    assert claims["sub"] == claims["client_id"] == client_id == "portcullis-service"
    assert claims["groups"] == ["svc-batch"]
    assert claims["realm_access"] == {"roles": ["mcp-service"]}
    assert claims["scope"] == "mcp:tools"
    assert response["expires_in"] == 600
    assert "refresh_token" not in response


def test_code_redeemed_without_resource_keeps_the_granted_audience(op: OidcProvider) -> None:
    """useGrantedResource: a token request that does not repeat ``resource`` still gets the JWT for it."""
    client = op.register_client()
    verifier, challenge = pkce_pair()
    url = op.authorization_url(client, code_challenge=challenge, state="s", resource=RESOURCE)
    result = op.authorize(url, "carol")
    assert result.code and result.state == "s" and result.iss == op.issuer
    claims = op.verify(op.exchange_code(client, result.code, verifier)["access_token"], RESOURCE)
    assert claims["groups"] == ["auditors"]


def test_login_hint_logs_in_without_the_form(op: OidcProvider) -> None:
    client = op.register_client()
    verifier, challenge = pkce_pair()
    url = op.authorization_url(client, code_challenge=challenge, state="h", resource=RESOURCE, login_hint="bob")
    result = op.authorize(url, user="not-used-when-the-hint-names-a-user")
    assert result.code, result
    claims = op.verify(op.exchange_code(client, result.code, verifier, RESOURCE)["access_token"], RESOURCE)
    assert claims["sub"] == "bob"


def test_refresh_token_flow_keeps_audience_and_groups(op: OidcProvider) -> None:
    """What the MCP Python SDK asks for: offline_access with prompt=consent (consent is automatic here)."""
    client = op.register_client()
    first = op.user_token_response(
        "bob", RESOURCE, "mcp:tools offline_access", client=client, auth_params={"prompt": "consent"}
    )
    assert first["refresh_token"]
    second = op.refresh(client, first["refresh_token"], RESOURCE)
    claims = op.verify(second["access_token"], RESOURCE)
    assert claims["sub"] == "bob" and claims["groups"] == ["eng"] and claims["aud"] == RESOURCE


def test_login_and_request_errors(op: OidcProvider) -> None:
    client = op.register_client()
    _, challenge = pkce_pair()
    denied = op.authorize(op.authorization_url(client, code_challenge=challenge, state="x", resource=RESOURCE), "eve")
    assert (denied.error, denied.code, denied.state) == ("access_denied", None, "x")

    # PKCE is required: no code_challenge, no code.
    url = op.authorization_url(client, code_challenge=challenge, state="y", resource=RESOURCE)
    no_pkce = op.authorize(url.replace("code_challenge=", "ignored="), "alice")
    assert no_pkce.error == "invalid_request" and no_pkce.code is None

    with pytest.raises(OidcError, match="invalid_target"):
        op.user_token("alice", RESOURCE + "#fragment")
    with pytest.raises(OidcError, match="invalid_client"):
        op.client_credentials_token(RESOURCE, client_secret="wrong")


def test_negative_tokens_fail_validation_for_the_intended_reason(op: OidcProvider) -> None:
    baseline = op.forge_token(op.token_claims(RESOURCE))
    assert op.verify(baseline, RESOURCE)["groups"] == ["eng", "oncall"]  # forging itself yields acceptable tokens

    negatives = op.negative_tokens(RESOURCE)
    expected: dict[str, type[Exception]] = {
        "expired": jwt.ExpiredSignatureError,
        "not_yet_valid": jwt.ImmatureSignatureError,
        "wrong_audience": jwt.InvalidAudienceError,
        "audience_other_resource": jwt.InvalidAudienceError,
        "no_audience": jwt.MissingRequiredClaimError,
        "wrong_issuer": jwt.InvalidIssuerError,
        "issuer_trailing_slash": jwt.InvalidIssuerError,
        "no_expiry": jwt.MissingRequiredClaimError,
        "unknown_kid": jwt.InvalidTokenError,
        "bad_signature": jwt.InvalidSignatureError,
        "tampered_payload": jwt.InvalidSignatureError,
        "alg_none": jwt.InvalidAlgorithmError,
        "alg_hs256_public_key_as_secret": jwt.InvalidAlgorithmError,
        "id_token_not_access_token": jwt.InvalidAudienceError,
    }
    assert set(negatives) == set(expected)
    for name, token in negatives.items():
        with pytest.raises(expected[name]):
            op.verify(token, RESOURCE)


def test_key_rotation(tmp_path: Path) -> None:
    with running_oidc_provider(tmp_path) as op:
        before = op.user_token("alice", RESOURCE)
        old_kid = jwt.get_unverified_header(before)["kid"]

        kept = op.rotate_keys(keep_old=True)
        new_kid = kept["access_token_kid"]
        assert new_kid != old_kid and kept["removed"] == []
        published = {k["kid"] for k in op.jwks()["keys"]}
        assert {old_kid, new_kid} <= published

        after = op.user_token("alice", RESOURCE)
        assert jwt.get_unverified_header(after)["kid"] == new_kid
        assert jwt.get_unverified_header(op.client_credentials_token(RESOURCE))["kid"] == new_kid
        assert op.verify(after, RESOURCE)["groups"] == ["eng", "oncall"]
        assert op.verify(before, RESOURCE)["sub"] == "alice"  # the old key still verifies what it signed

        dropped = op.rotate_keys(keep_old=False)
        newest = dropped["access_token_kid"]
        assert {old_kid, new_kid} <= set(dropped["removed"])
        assert {k["kid"] for k in op.jwks()["keys"]} == set(dropped["signing"].values())
        assert jwt.get_unverified_header(op.user_token("bob", RESOURCE))["kid"] == newest
        with pytest.raises(jwt.InvalidTokenError, match="not in the JWKS"):
            op.verify(before, RESOURCE)


def test_config_overrides_and_user_updates(tmp_path: Path) -> None:
    overrides = {
        "accessTokenSigningAlg": "ES256",
        "accessTokenTTL": 60,
        "resources": [RESOURCE],
        "oauthAuthorizationServerMetadata": False,
        "users": {"dave": None, "erin": {"email": "erin@example.test", "name": "Erin"}},
    }
    with running_oidc_provider(tmp_path, overrides) as op:
        assert sorted(op.config["users"]) == ["alice", "bob", "carol", "erin"]
        assert op.get("/.well-known/oauth-authorization-server")[0] == 404
        token = op.user_token("erin", RESOURCE, scopes="mcp:tools")
        assert jwt.get_unverified_header(token)["alg"] == "ES256"
        claims = op.verify(token, RESOURCE)
        assert claims["exp"] - claims["iat"] == 60
        assert "groups" not in claims  # a user without a groups key gets no groups claim

        with pytest.raises(OidcError, match="invalid_target"):
            op.client_credentials_token("http://127.0.0.1:8080/mcp/not-listed")

        op.set_user("bob", groups=["eng", "oncall"])
        assert op.verify(op.user_token("bob", RESOURCE), RESOURCE)["groups"] == ["eng", "oncall"]


def test_startup_and_issuance_latency(tmp_path: Path, record_property: Any) -> None:
    with running_oidc_provider(tmp_path) as op:
        started = time.perf_counter()
        op.client_credentials_token(RESOURCE)
        client_credentials_s = time.perf_counter() - started
        started = time.perf_counter()
        op.user_token("alice", RESOURCE)
        user_flow_s = time.perf_counter() - started
    record_property("oidc_start_s", round(op.started_in, 3))
    record_property("client_credentials_s", round(client_credentials_s, 4))
    record_property("user_flow_s", round(user_flow_s, 4))
    print(
        f"oidc provider: start {op.started_in:.3f}s, client credentials {client_credentials_s * 1000:.1f} ms, "
        f"user flow (register + auth + login + consent + token) {user_flow_s * 1000:.1f} ms"
    )
    assert op.started_in < 15 and client_credentials_s < 5 and user_flow_s < 10


# ---- the official MCP Python SDK's OAuth client against this provider ------------------------------------------


@pytest.fixture
def listening_socket() -> Iterator[socket.socket]:
    """A bound, listening loopback socket: connections queue in the kernel until the server accepts them, so the
    server needs no readiness wait."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield sock


@pytest.mark.parametrize("rfc8414", [True, False], ids=["rfc8414-metadata", "oidc-discovery-only"])
async def test_mcp_python_sdk_oauth_client_logs_in(
    tmp_path: Path, listening_socket: socket.socket, rfc8414: bool
) -> None:
    """SDK MCP server as the resource server (RFC 9728 metadata from the SDK), SDK client with OAuthClientProvider:
    it discovers this provider (RFC 8414 URL, or its fallback to OIDC discovery), registers dynamically, logs in
    (headless) and calls a tool with a JWT whose aud is the MCP URL."""
    mcp_url = f"http://127.0.0.1:{listening_socket.getsockname()[1]}/mcp"
    seen: dict[str, Any] = {"verified": []}

    async with async_running_oidc_provider(tmp_path, {"oauthAuthorizationServerMetadata": rfc8414}) as op:

        class Verifier:
            async def verify_token(self, token: str) -> AccessToken | None:
                try:
                    claims = await op.aio.verify(token, mcp_url)
                except jwt.PyJWTError:
                    return None
                seen["verified"].append(claims)
                return AccessToken(
                    token=token,
                    client_id=claims["client_id"],
                    scopes=claims.get("scope", "").split(),
                    expires_at=claims["exp"],
                    resource=claims["aud"],
                    subject=claims["sub"],
                    claims=claims,
                )

        server = MCPServer(
            "oidc-harness-rs",
            token_verifier=Verifier(),
            auth=AuthSettings(
                issuer_url=op.issuer,
                resource_server_url=mcp_url,
                required_scopes=["mcp:tools"],
                validate_token_resource=True,
            ),
        )

        @server.tool()
        def whoami() -> str:
            return "ok"

        app = server.streamable_http_app(streamable_http_path="/mcp", host="127.0.0.1")
        web = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False))

        async def redirect_handler(url: str) -> None:
            seen["authorization_url"] = url

        async def callback_handler() -> AuthorizationCodeResult:
            result = await op.aio.authorize(seen["authorization_url"], "alice")
            return AuthorizationCodeResult(code=result.code or "", state=result.state, iss=result.iss)

        storage = MemoryTokenStorage()
        auth = OAuthClientProvider(
            mcp_url,
            OAuthClientMetadata(redirect_uris=["http://127.0.0.1:33418/callback"], client_name="harness"),
            storage,
            redirect_handler,
            callback_handler,
        )
        async with asyncio.TaskGroup() as tg:
            tg.create_task(web.serve(sockets=[listening_socket]))
            try:
                async with asyncio.timeout(60):
                    async with (
                        httpx2.AsyncClient(auth=auth, timeout=20) as http,
                        Client(streamable_http_client(mcp_url, http_client=http), mode="legacy") as client,
                    ):
                        result = await client.call_tool("whoami", {})
            finally:
                web.should_exit = True

    assert result.content[0].text == "ok"  # type: ignore[union-attr]
    assert "resource=" in seen["authorization_url"] and "code_challenge=" in seen["authorization_url"]
    claims = seen["verified"][-1]
    assert claims["aud"] == mcp_url and claims["iss"] == op.issuer and claims["groups"] == ["eng", "oncall"]
    assert storage.client is not None and storage.client.client_id == claims["client_id"]
    assert storage.tokens is not None and storage.tokens.refresh_token  # offline_access + prompt=consent
