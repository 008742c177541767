"""The OAuth pieces of `portcullis login` without sockets: discovery, the callback checks, PKCE, the device flow."""

from __future__ import annotations

import base64
import hashlib
import re
import urllib.parse
from collections.abc import Mapping
from typing import Any

import click
import pytest

from portcullis.cli.login import (
    DEVICE_GRANT,
    ClientRegistration,
    OAuthError,
    add_query,
    authorization_server_metadata_urls,
    check_callback,
    device_flow,
    fetch_authorization_server,
    fetch_resource_metadata,
    metadata_urls,
    normalize_gateway,
    pkce_pair,
)

GW = "http://127.0.0.1:8080"
ISSUER = "http://idp.test"


class FakeHttp:
    """Answers by URL (GET) or by the form's grant type / endpoint (POST); records every call."""

    def __init__(self, gets: Mapping[str, tuple[int, Any]] | None = None, posts: list[tuple[int, Any]] | None = None):
        self.gets = dict(gets or {})
        self.posts = list(posts or [])
        self.calls: list[tuple[str, str, Any]] = []

    async def get_json(self, url: str) -> tuple[int, Any]:
        self.calls.append(("GET", url, None))
        return self.gets.get(url, (404, None))

    async def post_form(
        self, url: str, form: Mapping[str, str], basic: tuple[str, str] | None = None
    ) -> tuple[int, Any]:
        self.calls.append(("POST", url, dict(form)))
        return self.posts.pop(0)

    async def post_json(self, url: str, body: Mapping[str, Any]) -> tuple[int, Any]:
        self.calls.append(("JSON", url, dict(body)))
        return self.posts.pop(0)


# --- discovery -------------------------------------------------------------------------------------------------


def test_gateway_urls_are_normalized_and_checked() -> None:
    assert normalize_gateway("http://127.0.0.1:8080/") == GW
    assert normalize_gateway(" https://gw.example.com/base/ ") == "https://gw.example.com/base"
    for bad in ("ftp://x", "gateway", "http://x/?a=1", "http://x/#f"):
        with pytest.raises(click.BadParameter):
            normalize_gateway(bad)


def test_metadata_urls_path_form_first() -> None:
    assert metadata_urls(GW, "fx") == [
        (f"{GW}/.well-known/oauth-protected-resource/mcp/fx", f"{GW}/mcp/fx"),
        (f"{GW}/.well-known/oauth-protected-resource", GW),
    ]
    assert metadata_urls("https://h/base", None) == [
        ("https://h/.well-known/oauth-protected-resource/base", "https://h/base")
    ]


def test_authorization_server_metadata_urls() -> None:
    assert authorization_server_metadata_urls("https://as.test") == [
        "https://as.test/.well-known/oauth-authorization-server",
        "https://as.test/.well-known/openid-configuration",
    ]
    assert authorization_server_metadata_urls("https://as.test/realms/x") == [
        "https://as.test/.well-known/oauth-authorization-server/realms/x",
        "https://as.test/.well-known/openid-configuration/realms/x",
        "https://as.test/realms/x/.well-known/openid-configuration",
    ]


async def test_resource_metadata_path_form_and_root_fallback() -> None:
    doc = {"resource": f"{GW}/mcp/fx", "authorization_servers": [ISSUER], "scopes_supported": ["mcp:tools"]}
    http = FakeHttp({f"{GW}/.well-known/oauth-protected-resource/mcp/fx": (200, doc)})
    prm = await fetch_resource_metadata(http, GW, "fx")
    assert (prm.resource, prm.authorization_servers, prm.scopes_supported) == (f"{GW}/mcp/fx", [ISSUER], ["mcp:tools"])

    root = {"resource": GW, "authorization_servers": [ISSUER]}
    http = FakeHttp({f"{GW}/.well-known/oauth-protected-resource": (200, root)})
    prm = await fetch_resource_metadata(http, GW, "fx")
    assert prm.resource == GW and prm.scopes_supported == []
    assert [u for _, u, _ in http.calls] == [
        f"{GW}/.well-known/oauth-protected-resource/mcp/fx",
        f"{GW}/.well-known/oauth-protected-resource",
    ]


async def test_resource_metadata_for_another_resource_is_refused() -> None:
    doc = {"resource": "https://evil.test/mcp/fx", "authorization_servers": [ISSUER]}
    http = FakeHttp({f"{GW}/.well-known/oauth-protected-resource/mcp/fx": (200, doc)})
    with pytest.raises(OAuthError, match=re.escape("describes the resource 'https://evil.test/mcp/fx'")):
        await fetch_resource_metadata(http, GW, "fx")
    http = FakeHttp(
        {f"{GW}/.well-known/oauth-protected-resource": (200, {"resource": GW, "authorization_servers": []})}
    )
    with pytest.raises(OAuthError, match="names no authorization server"):
        await fetch_resource_metadata(http, GW, None)
    with pytest.raises(OAuthError, match="no protected-resource metadata"):
        await fetch_resource_metadata(FakeHttp(), GW, None)


async def test_authorization_server_issuer_must_match_exactly() -> None:
    good = {"issuer": ISSUER, "token_endpoint": f"{ISSUER}/token"}
    http = FakeHttp({f"{ISSUER}/.well-known/openid-configuration": (200, good)})
    assert await fetch_authorization_server(http, ISSUER) == good  # after the RFC 8414 URL answered 404
    bad = {"issuer": ISSUER + "/", "token_endpoint": f"{ISSUER}/token"}
    http = FakeHttp({f"{ISSUER}/.well-known/oauth-authorization-server": (200, bad)})
    with pytest.raises(OAuthError, match="RFC 8414"):
        await fetch_authorization_server(http, ISSUER)
    with pytest.raises(OAuthError, match="no authorization server metadata"):
        await fetch_authorization_server(FakeHttp(), ISSUER)


# --- PKCE and the authorization response ---------------------------------------------------------------------------


def test_pkce_pair_is_s256() -> None:
    verifier, challenge = pkce_pair()
    assert 43 <= len(verifier) <= 128
    expected = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    assert challenge == expected
    assert pkce_pair()[0] != verifier


def test_add_query_keeps_the_endpoints_own_query() -> None:
    url = add_query("https://as.test/authorize?tenant=a", {"client_id": "c", "scope": "a b"})
    assert urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query) == [
        ("tenant", "a"),
        ("client_id", "c"),
        ("scope", "a b"),
    ]


def test_check_callback() -> None:
    ok = {"code": "abc", "state": "s1", "iss": ISSUER}
    assert check_callback(ok, "s1", ISSUER, True) == "abc"
    assert check_callback({"code": "abc", "state": "s1"}, "s1", ISSUER, False) == "abc"
    with pytest.raises(OAuthError, match="wrong state"):
        check_callback({**ok, "state": "s2"}, "s1", ISSUER, True)
    with pytest.raises(OAuthError, match="RFC 9207"):
        check_callback({**ok, "iss": "http://mixup.test"}, "s1", ISSUER, True)
    with pytest.raises(OAuthError, match="lacks the iss"):
        check_callback({"code": "abc", "state": "s1"}, "s1", ISSUER, True)
    with pytest.raises(OAuthError, match="login refused: access_denied: no"):
        check_callback({"error": "access_denied", "error_description": "no", "state": "s1"}, "s1", ISSUER, False)
    with pytest.raises(OAuthError, match="no authorization code"):
        check_callback({"state": "s1"}, "s1", ISSUER, False)


# --- the device authorization grant ----------------------------------------------------------------------------

ASM = {
    "issuer": ISSUER,
    "token_endpoint": f"{ISSUER}/token",
    "device_authorization_endpoint": f"{ISSUER}/device",
    "registration_endpoint": f"{ISSUER}/reg",
}
DEVICE_ANSWER = {
    "device_code": "dc",
    "user_code": "WDJB-MJHT",
    "verification_uri": f"{ISSUER}/device",
    "verification_uri_complete": f"{ISSUER}/device?user_code=WDJB-MJHT",
    "expires_in": 600,
    "interval": 5,
}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


async def test_device_flow_polls_until_approved() -> None:
    http = FakeHttp(
        posts=[
            (201, {"client_id": "dev-client", "grant_types": [DEVICE_GRANT, "refresh_token"]}),
            (200, DEVICE_ANSWER),
            (400, {"error": "authorization_pending"}),
            (400, {"error": "slow_down"}),
            (400, {"error": "authorization_pending"}),
            (200, {"access_token": "at", "token_type": "Bearer", "expires_in": 600}),
        ]
    )
    clock = Clock()
    said: list[str] = []
    client, body = await device_flow(
        http, ASM, ISSUER, f"{GW}/mcp/fx", "mcp:tools", None,
        open_browser=False, within=300, echo=said.append, sleep=clock.sleep, clock=clock,
    )  # fmt: skip
    assert client.client_id == "dev-client" and client.registered and body["access_token"] == "at"
    assert clock.slept == [5, 5, 10, 10]  # slow_down adds 5 s to the interval (RFC 8628 §3.5)
    assert any("WDJB-MJHT" in line for line in said)
    kind, url, registration = http.calls[0]
    assert kind == "JSON" and url == f"{ISSUER}/reg"
    assert registration["grant_types"] == [DEVICE_GRANT, "refresh_token"] and registration["response_types"] == []
    assert http.calls[1] == (
        "POST",
        f"{ISSUER}/device",
        {"resource": f"{GW}/mcp/fx", "scope": "mcp:tools", "client_id": "dev-client"},
    )
    assert http.calls[-1][2] == {
        "grant_type": DEVICE_GRANT,
        "device_code": "dc",
        "resource": f"{GW}/mcp/fx",
        "client_id": "dev-client",
    }


async def test_device_flow_denied_or_expired() -> None:
    client = ClientRegistration("c", grant_types=[DEVICE_GRANT])
    http = FakeHttp(posts=[(200, DEVICE_ANSWER), (400, {"error": "access_denied"})])
    clock = Clock()
    with pytest.raises(OAuthError, match="access_denied"):
        await device_flow(
            http, ASM, ISSUER, GW, None, client, open_browser=False, within=300, echo=lambda _: None,
            sleep=clock.sleep, clock=clock,
        )  # fmt: skip
    http = FakeHttp(
        posts=[(200, {**DEVICE_ANSWER, "expires_in": 12})] + [(400, {"error": "authorization_pending"})] * 5
    )
    clock = Clock()
    with pytest.raises(OAuthError, match="not approved within 12 s"):
        await device_flow(
            http, ASM, ISSUER, GW, None, client, open_browser=False, within=300, echo=lambda _: None,
            sleep=clock.sleep, clock=clock,
        )  # fmt: skip
    assert clock.slept == [5, 5]


async def test_device_flow_needs_the_endpoint() -> None:
    asm = {k: v for k, v in ASM.items() if k != "device_authorization_endpoint"}
    with pytest.raises(OAuthError, match="does not offer the device authorization grant"):
        await device_flow(FakeHttp(), asm, ISSUER, GW, None, None, open_browser=False, within=5, echo=lambda _: None)
