"""The `portcullis login` token cache: private files, keys, expiry, the refresh decision, refreshing under the lock."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from portcullis.cli.login import (
    CacheKey,
    ClientRegistration,
    LoginEntry,
    LoginRequired,
    OAuthError,
    TokenCache,
    TokenSet,
    cache_keys,
    config_dir,
    expired,
    fresh_entry,
    token_action,
    token_set,
)

GW = "http://127.0.0.1:8080"
KEY = CacheKey(GW, f"{GW}/mcp/fx")
NOW = 1_800_000_000.0


def entry(
    key: CacheKey = KEY, access: str = "at-1", refresh: str | None = "rt-1", expires_at: float | None = NOW + 600
) -> LoginEntry:
    return LoginEntry(
        key,
        "fx",
        "http://idp.test",
        "http://idp.test/token",
        ClientRegistration("client-1", grant_types=["authorization_code", "refresh_token"], registered=True),
        TokenSet(access, refresh_token=refresh, expires_at=expires_at, obtained_at=NOW),
    )


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- where, and how private ------------------------------------------------------------------------------------


def test_config_dir_precedence(tmp_path: Path) -> None:
    assert config_dir({"PORTCULLIS_CONFIG_DIR": "/x/y", "XDG_CONFIG_HOME": "/xdg"}) == Path("/x/y")
    assert config_dir({"XDG_CONFIG_HOME": "/xdg"}) == Path("/xdg/portcullis")
    assert config_dir({"XDG_CONFIG_HOME": "relative/ignored"}) == Path.home() / ".config" / "portcullis"
    assert config_dir({}) == Path.home() / ".config" / "portcullis"


def test_saved_entries_are_private_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        cache = TokenCache(tmp_path / "cfg")
        path = cache.save(entry())
    finally:
        os.umask(old)
    assert mode(tmp_path / "cfg") == 0o700 and mode(tmp_path / "cfg" / "tokens") == 0o700
    assert mode(path) == 0o600
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left behind


def test_an_existing_open_directory_is_closed(tmp_path: Path) -> None:
    root = tmp_path / "cfg"
    (root / "tokens").mkdir(parents=True)
    os.chmod(root, 0o755)
    os.chmod(root / "tokens", 0o777)
    TokenCache(root).save(entry())
    assert mode(root) == 0o700 and mode(root / "tokens") == 0o700


def test_a_readable_entry_is_made_private_on_load(tmp_path: Path) -> None:
    cache = TokenCache(tmp_path)
    path = cache.save(entry())
    os.chmod(path, 0o644)
    assert cache.load(KEY) is not None
    assert mode(path) == 0o600


def test_roundtrip_and_keys(tmp_path: Path) -> None:
    cache = TokenCache(tmp_path)
    assert cache.load(KEY) is None
    cache.save(entry())
    loaded = cache.load(KEY)
    assert loaded is not None and loaded.to_json() == entry().to_json()
    other = CacheKey(GW, GW)  # the gateway-wide login is another entry
    assert cache.path(other) != cache.path(KEY) and cache.load(other) is None
    assert cache.path(CacheKey("http://other:8080", KEY.resource)) != cache.path(KEY)
    assert cache_keys(GW, "fx") == [KEY, CacheKey(GW, GW)]
    assert cache_keys(GW, None) == [CacheKey(GW, GW)]


def test_an_entry_under_the_wrong_name_or_garbled_is_ignored(tmp_path: Path) -> None:
    cache = TokenCache(tmp_path)
    path = cache.save(entry())
    other = CacheKey(GW, GW)
    cache.path(other).write_bytes(path.read_bytes())
    assert cache.load(other) is None  # it names another gateway/resource than its file name says
    path.write_text("{not json")
    assert cache.load(KEY) is None
    path.write_text(json.dumps({"version": 99}))
    assert cache.load(KEY) is None


def test_a_symlinked_entry_is_not_followed(tmp_path: Path) -> None:
    cache = TokenCache(tmp_path / "cfg")
    cache.save(entry())
    target = tmp_path / "elsewhere.json"
    target.write_bytes(cache.path(KEY).read_bytes())
    cache.path(KEY).unlink()
    cache.path(KEY).symlink_to(target)
    assert cache.load(KEY) is None


def test_forget_token_keeps_the_client(tmp_path: Path) -> None:
    cache = TokenCache(tmp_path)
    cache.save(entry())
    cache.forget_token(KEY)
    loaded = cache.load(KEY)
    assert loaded is not None and loaded.token is None and loaded.client.client_id == "client-1"


async def test_the_lock_is_exclusive_across_handles(tmp_path: Path) -> None:
    cache = TokenCache(tmp_path)
    async with cache.lock(KEY):
        with pytest.raises(OAuthError, match="stayed locked"):
            async with TokenCache(tmp_path).lock(KEY, within=0.05):
                pass
    async with cache.lock(KEY, within=0.05):  # released
        pass


# --- expiry and the decision -----------------------------------------------------------------------------------


def test_expiry_with_skew() -> None:
    assert not expired(TokenSet("a", expires_at=None), NOW)  # the server did not say: use it until refused
    assert not expired(TokenSet("a", expires_at=NOW + 61), NOW)
    assert expired(TokenSet("a", expires_at=NOW + 59), NOW)  # within the 60 s skew
    assert expired(TokenSet("a", expires_at=NOW - 1), NOW)
    assert not expired(TokenSet("a", expires_at=NOW + 10), NOW, skew=5)


@pytest.mark.parametrize(
    ("token", "failed", "action"),
    [
        (None, None, "login"),
        (TokenSet("a", refresh_token="r", expires_at=NOW + 600), None, "use"),
        (TokenSet("a", refresh_token=None, expires_at=None), None, "use"),
        (TokenSet("a", refresh_token="r", expires_at=NOW + 10), None, "refresh"),
        (TokenSet("a", refresh_token=None, expires_at=NOW - 10), None, "login"),
        (TokenSet("a", refresh_token="r", expires_at=NOW + 600), "a", "refresh"),  # refused by the gateway
        (TokenSet("a", refresh_token=None, expires_at=NOW + 600), "a", "login"),
        (TokenSet("b", refresh_token="r", expires_at=NOW + 600), "a", "use"),  # someone refreshed since
    ],
)
def test_token_action(token: TokenSet | None, failed: str | None, action: str) -> None:
    assert token_action(token, NOW, failed) == action


def test_token_set_parsing() -> None:
    t = token_set({"access_token": "a", "token_type": "bearer", "expires_in": 300, "scope": "mcp:tools"}, NOW, "old-rt")
    assert (t.access_token, t.token_type, t.expires_at, t.refresh_token, t.scope) == (
        "a",
        "Bearer",
        NOW + 300,
        "old-rt",  # a refresh answer without a refresh token keeps the old one
        "mcp:tools",
    )
    assert token_set({"access_token": "a", "refresh_token": "new"}, NOW, "old").refresh_token == "new"
    assert token_set({"access_token": "a", "expires_in": "soon"}, NOW).expires_at is None
    with pytest.raises(OAuthError, match="token type"):
        token_set({"access_token": "a", "token_type": "DPoP"}, NOW)
    with pytest.raises(OAuthError, match="without an access token"):
        token_set({"error": "x"}, NOW)


# --- refreshing under the lock ---------------------------------------------------------------------------------


class FakeTokenEndpoint:
    def __init__(self, *answers: tuple[int, Any]) -> None:
        self.answers = list(answers)
        self.forms: list[dict[str, str]] = []
        self.basic: list[tuple[str, str] | None] = []

    async def get_json(self, url: str) -> tuple[int, Any]:
        raise AssertionError("no GET expected")

    async def post_json(self, url: str, body: Mapping[str, Any]) -> tuple[int, Any]:
        raise AssertionError("no JSON POST expected")

    async def post_form(
        self, url: str, form: Mapping[str, str], basic: tuple[str, str] | None = None
    ) -> tuple[int, Any]:
        assert url == "http://idp.test/token"
        self.forms.append(dict(form))
        self.basic.append(basic)
        return self.answers.pop(0)


async def test_fresh_entry_uses_a_valid_token_without_asking(tmp_path: Path) -> None:
    cache = TokenCache(tmp_path)
    cache.save(entry())
    http = FakeTokenEndpoint()
    got = await fresh_entry(cache, KEY, http, now=lambda: NOW)
    assert got.token is not None and got.token.access_token == "at-1" and http.forms == []


async def test_fresh_entry_refreshes_an_expired_token_and_saves_it(tmp_path: Path) -> None:
    cache = TokenCache(tmp_path)
    cache.save(entry(expires_at=NOW - 1))
    http = FakeTokenEndpoint((200, {"access_token": "at-2", "refresh_token": "rt-2", "expires_in": 600}))
    got = await fresh_entry(cache, KEY, http, now=lambda: NOW)
    assert got.token is not None and got.token.access_token == "at-2"
    assert http.forms == [
        {"grant_type": "refresh_token", "refresh_token": "rt-1", "resource": KEY.resource, "client_id": "client-1"}
    ]
    assert http.basic == [None]  # a public client
    saved = cache.load(KEY)
    assert saved is not None and saved.token is not None
    assert (saved.token.access_token, saved.token.refresh_token, saved.token.expires_at) == ("at-2", "rt-2", NOW + 600)


async def test_fresh_entry_refreshes_a_refused_token_once(tmp_path: Path) -> None:
    cache = TokenCache(tmp_path)
    cache.save(entry())
    http = FakeTokenEndpoint((200, {"access_token": "at-2", "expires_in": 600}))
    got = await fresh_entry(cache, KEY, http, failed="at-1", now=lambda: NOW)
    assert got.token is not None and got.token.access_token == "at-2" and got.token.refresh_token == "rt-1"
    # a second process that saw at-1 refused finds at-2 cached and does not spend the refresh token again
    again = await fresh_entry(cache, KEY, http, failed="at-1", now=lambda: NOW)
    assert again.token is not None and again.token.access_token == "at-2" and len(http.forms) == 1


async def test_a_refused_refresh_token_is_dropped(tmp_path: Path) -> None:
    cache = TokenCache(tmp_path)
    cache.save(entry(expires_at=NOW - 1))
    http = FakeTokenEndpoint((400, {"error": "invalid_grant", "error_description": "grant request is invalid"}))
    with pytest.raises(LoginRequired, match="invalid_grant"):
        await fresh_entry(cache, KEY, http, now=lambda: NOW)
    saved = cache.load(KEY)
    assert saved is not None and saved.token is None and saved.client.client_id == "client-1"
    with pytest.raises(LoginRequired, match="no cached login"):
        await fresh_entry(cache, KEY, http, now=lambda: NOW)


async def test_a_server_failure_leaves_the_cache_alone(tmp_path: Path) -> None:
    cache = TokenCache(tmp_path)
    cache.save(entry(expires_at=NOW - 1))
    http = FakeTokenEndpoint((503, None))
    with pytest.raises(OAuthError, match="HTTP 503"):
        await fresh_entry(cache, KEY, http, now=lambda: NOW)
    saved = cache.load(KEY)
    assert saved is not None and saved.token is not None and saved.token.refresh_token == "rt-1"


async def test_expired_without_refresh_token_needs_a_login(tmp_path: Path) -> None:
    cache = TokenCache(tmp_path)
    cache.save(entry(refresh=None, expires_at=NOW - 1))
    with pytest.raises(LoginRequired, match="no refresh token"):
        await fresh_entry(cache, KEY, FakeTokenEndpoint(), now=lambda: NOW)


async def test_a_confidential_client_authenticates_with_basic(tmp_path: Path) -> None:
    cache = TokenCache(tmp_path)
    e = entry(expires_at=NOW - 1)
    e.client = ClientRegistration("c", "s3cret", "client_secret_basic", registered=True)
    cache.save(e)
    http = FakeTokenEndpoint((200, {"access_token": "at-2"}))
    await fresh_entry(cache, KEY, http, now=lambda: NOW)
    assert http.basic == [("c", "s3cret")] and "client_id" not in http.forms[0]
