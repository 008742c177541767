"""``portcullis login``: get a token for the gateway the way an MCP client does, and keep it safely.

Discovery follows the MCP authorization spec: the gateway's RFC 9728 protected-resource metadata (path form
``/.well-known/oauth-protected-resource/mcp/<server>``, else the root form) names the authorization server; its
RFC 8414 / OpenID metadata names the endpoints. Without ``--client-id`` a public client is registered dynamically
(RFC 7591, ``application_type: native``, a loopback redirect URI: RFC 8252 lets the port vary per login). The login
itself is authorization code + PKCE (S256) with a one-shot listener on ``127.0.0.1`` (random port), or the device
authorization grant (RFC 8628, ``--device``) when the server advertises it. Every token request names the gateway's
resource (RFC 8707), so the token's audience is that endpoint.

The cache: one JSON file per (gateway, resource) in ``<config dir>/tokens/``, mode 0600 in 0700 directories, written
atomically (temp file + rename). ``<config dir>`` is ``$PORTCULLIS_CONFIG_DIR``, else ``$XDG_CONFIG_HOME/portcullis``,
else ``~/.config/portcullis``. A refresh happens under an exclusive lock on the entry (``flock``), after re-reading
it: identity providers rotate refresh tokens, and a rotated one spent twice (two ``portcullis connect`` processes at
once) revokes the whole grant.

Tokens never reach stdout or a log unless ``--print-token`` asks for the access token on stdout.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import hashlib
import hmac
import html
import json
import logging
import os
import secrets
import stat
import sys
import time
import urllib.parse
import webbrowser
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import aiohttp
import click
from aiohttp import web

if sys.platform != "win32":
    import fcntl

log = logging.getLogger("portcullis.login")

CONFIG_DIR_ENV = "PORTCULLIS_CONFIG_DIR"
CACHE_VERSION = 1
EXPIRY_SKEW = 60.0  # a token this close to its expiry is refreshed before use
HTTP_TIMEOUT = 30.0
MAX_OAUTH_BODY = 1024 * 1024
LOCK_TIMEOUT = 60.0
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
CLIENT_NAME = "Portcullis CLI"
PRM_PATH = "/.well-known/oauth-protected-resource"

TokenAction = Literal["use", "refresh", "login"]


class OAuthError(click.ClickException):
    """The login cannot go on: discovery, registration, the authorization server or the user said no."""

    def __init__(self, message: str, error: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.error = error
        self.status = status


class LoginRequired(Exception):
    """No usable token is cached (none, expired without a refresh token, or the refresh was refused)."""


# ---------------------------------------------------------------------------------------------------------------
# the cache


@dataclass(frozen=True, slots=True)
class CacheKey:
    gateway: str  # normalized: scheme://host[:port][/path], no trailing slash
    resource: str  # the protected resource the token is for (its audience)

    @property
    def digest(self) -> str:
        return hashlib.sha256(f"{self.gateway}\n{self.resource}".encode()).hexdigest()[:32]


@dataclass(slots=True)
class TokenSet:
    access_token: str
    token_type: str = "Bearer"
    refresh_token: str | None = None
    expires_at: float | None = None  # epoch seconds; None: the server did not say
    scope: str | None = None
    obtained_at: float = 0.0


@dataclass(slots=True)
class ClientRegistration:
    client_id: str
    client_secret: str | None = None
    token_endpoint_auth_method: str = "none"
    grant_types: list[str] = field(default_factory=list)
    redirect_uris: list[str] = field(default_factory=list)
    registered: bool = False  # registered dynamically by us (else: given with --client-id)


@dataclass(slots=True)
class LoginEntry:
    key: CacheKey
    server: str | None
    issuer: str
    token_endpoint: str
    client: ClientRegistration
    token: TokenSet | None

    def to_json(self) -> dict[str, Any]:
        return {
            "version": CACHE_VERSION,
            "gateway": self.key.gateway,
            "resource": self.key.resource,
            "server": self.server,
            "issuer": self.issuer,
            "token_endpoint": self.token_endpoint,
            "client": dataclasses.asdict(self.client),
            "token": dataclasses.asdict(self.token) if self.token is not None else None,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LoginEntry:
        if data.get("version") != CACHE_VERSION:
            raise ValueError(f"unknown cache version {data.get('version')!r}")
        client = data["client"]
        token = data.get("token")
        return cls(
            key=CacheKey(str(data["gateway"]), str(data["resource"])),
            server=data.get("server"),
            issuer=str(data["issuer"]),
            token_endpoint=str(data["token_endpoint"]),
            client=ClientRegistration(
                client_id=str(client["client_id"]),
                client_secret=client.get("client_secret"),
                token_endpoint_auth_method=str(client.get("token_endpoint_auth_method", "none")),
                grant_types=[str(g) for g in client.get("grant_types", [])],
                redirect_uris=[str(u) for u in client.get("redirect_uris", [])],
                registered=bool(client.get("registered", False)),
            ),
            token=None
            if token is None
            else TokenSet(
                access_token=str(token["access_token"]),
                token_type=str(token.get("token_type", "Bearer")),
                refresh_token=token.get("refresh_token"),
                expires_at=None if token.get("expires_at") is None else float(token["expires_at"]),
                scope=token.get("scope"),
                obtained_at=float(token.get("obtained_at", 0.0)),
            ),
        )


def config_dir(env: Mapping[str, str] | None = None) -> Path:
    """``$PORTCULLIS_CONFIG_DIR``, else ``$XDG_CONFIG_HOME/portcullis`` (when absolute), else
    ``~/.config/portcullis``."""
    env = os.environ if env is None else env
    explicit = env.get(CONFIG_DIR_ENV)
    if explicit:
        return Path(explicit)
    xdg = env.get("XDG_CONFIG_HOME")
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "portcullis"
    return Path.home() / ".config" / "portcullis"


def expired(token: TokenSet, now: float, skew: float = EXPIRY_SKEW) -> bool:
    return token.expires_at is not None and now >= token.expires_at - skew


def token_action(
    token: TokenSet | None, now: float, failed: str | None = None, skew: float = EXPIRY_SKEW
) -> TokenAction:
    """What to do with a cached token: send it, refresh it first, or ask the user to log in.

    ``failed`` is the access token the gateway just refused (401): if the cache still holds that very token it is
    stale whatever its expiry says; if the cache holds another one (someone refreshed or logged in since), use that.
    """
    if token is None:
        return "login"
    stale = (failed is not None and hmac.compare_digest(failed.encode(), token.access_token.encode())) or expired(
        token, now, skew
    )
    if not stale:
        return "use"
    return "refresh" if token.refresh_token else "login"


class TokenCache:
    """Login entries on disk: ``<root>/tokens/<digest>.json`` (0600) in 0700 directories, one per :class:`CacheKey`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.dir = root / "tokens"

    def path(self, key: CacheKey) -> Path:
        return self.dir / f"{key.digest}.json"

    def _ensure_dirs(self) -> None:
        for d in (self.root, self.dir):
            d.mkdir(mode=0o700, parents=True, exist_ok=True)
            st = d.stat()
            if hasattr(os, "getuid") and st.st_uid != os.getuid():
                raise OAuthError(f"{d} belongs to another user; refusing to keep tokens there")
            if stat.S_IMODE(st.st_mode) != 0o700:
                os.chmod(d, 0o700)

    def load(self, key: CacheKey) -> LoginEntry | None:
        path = self.path(key)
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("cannot read the token cache %s: %s", path, exc.strerror or exc)
            return None
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if hasattr(os, "getuid") and st.st_uid != os.getuid():
                log.warning("ignoring %s: it belongs to another user", path)
                return None
            if stat.S_IMODE(st.st_mode) & 0o077:
                log.warning("%s was readable by others; made it private (0600)", path)
                os.chmod(path, 0o600)
            raw = f.read(MAX_OAUTH_BODY + 1)
        try:
            entry = LoginEntry.from_json(json.loads(raw))
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring the unreadable token cache %s (%s)", path, exc)
            return None
        if entry.key != key:
            log.warning("ignoring %s: it holds a login for another gateway or resource", path)
            return None
        return entry

    def save(self, entry: LoginEntry) -> Path:
        """Write atomically: a 0600 temp file in the same directory, fsync, rename over the entry."""
        self._ensure_dirs()
        path = self.path(entry.key)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        data = json.dumps(entry.to_json(), indent=2).encode()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                os.chmod(tmp, 0o600)  # exactly, whatever the umask took away
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return path

    def forget_token(self, key: CacheKey) -> None:
        """Drop the tokens of an entry (a refused refresh token), keep its client registration."""
        entry = self.load(key)
        if entry is not None and entry.token is not None:
            entry.token = None
            self.save(entry)

    @contextlib.asynccontextmanager
    async def lock(self, key: CacheKey, within: float = LOCK_TIMEOUT) -> AsyncIterator[None]:
        """An exclusive, cross-process lock on one entry (``flock`` on ``<digest>.lock``), waited for at most
        ``within`` seconds. A process that dies releases it."""
        if sys.platform == "win32":  # no flock: a refresh race is possible there
            yield
            return
        self._ensure_dirs()
        fd = os.open(self.dir / f"{key.digest}.lock", os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
        try:
            deadline = time.monotonic() + within
            delay = 0.01
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise OAuthError(
                            f"the token cache entry {key.digest} stayed locked for {within:.0f} s"
                        ) from None
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 0.25)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


# ---------------------------------------------------------------------------------------------------------------
# HTTP for OAuth (a protocol, so the flows can be tested without sockets)


class OAuthHttp(Protocol):
    async def get_json(self, url: str) -> tuple[int, Any]: ...

    async def post_form(
        self, url: str, form: Mapping[str, str], basic: tuple[str, str] | None = None
    ) -> tuple[int, Any]: ...

    async def post_json(self, url: str, body: Mapping[str, Any]) -> tuple[int, Any]: ...


class AiohttpOAuth:
    """:class:`OAuthHttp` over an aiohttp session; bodies are bounded, non-JSON answers come back as ``None``."""

    def __init__(self, session: aiohttp.ClientSession, timeout: float = HTTP_TIMEOUT) -> None:
        self.session = session
        self.timeout = aiohttp.ClientTimeout(total=timeout)

    async def _send(self, method: str, url: str, **kwargs: Any) -> tuple[int, Any]:
        try:
            async with self.session.request(method, url, timeout=self.timeout, allow_redirects=False, **kwargs) as r:
                try:
                    raw = await read_limited(r.content, MAX_OAUTH_BODY)
                except TooLarge:
                    raise OAuthError(
                        f"{method} {_origin(url)}: the answer is larger than {MAX_OAUTH_BODY} bytes"
                    ) from None
                try:
                    return r.status, json.loads(raw) if raw else None
                except ValueError:
                    return r.status, None
        except TimeoutError:
            raise OAuthError(f"{method} {_origin(url)}: no answer within {self.timeout.total:.0f} s") from None
        except aiohttp.ClientError as exc:
            raise OAuthError(f"{method} {_origin(url)}: {exc}") from None

    async def get_json(self, url: str) -> tuple[int, Any]:
        return await self._send("GET", url, headers={"Accept": "application/json"})

    async def post_form(
        self, url: str, form: Mapping[str, str], basic: tuple[str, str] | None = None
    ) -> tuple[int, Any]:
        headers = {"Accept": "application/json", "Content-Type": "application/x-www-form-urlencoded"}
        if basic is not None:
            user, password = (urllib.parse.quote(x, safe="") for x in basic)
            headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        return await self._send("POST", url, data=urllib.parse.urlencode(dict(form)), headers=headers)

    async def post_json(self, url: str, body: Mapping[str, Any]) -> tuple[int, Any]:
        return await self._send(
            "POST",
            url,
            data=json.dumps(body),
            headers={"Accept": "application/json", "Content-Type": "application/json"},
        )


class TooLarge(ValueError):
    """A body exceeded its limit."""


async def read_limited(content: aiohttp.StreamReader, limit: int) -> bytes:
    """A whole body, but never more than ``limit`` bytes of it (TooLarge)."""
    buf = bytearray()
    async for chunk in content.iter_any():
        buf += chunk
        if len(buf) > limit:
            raise TooLarge(f"larger than {limit} bytes")
    return bytes(buf)


def _origin(url: str) -> str:
    """The URL without query or fragment (what error messages show: a query may carry a code)."""
    s = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit((s.scheme, s.netloc, s.path, "", ""))


def _oauth_error(what: str, status: int, body: Any) -> OAuthError:
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        desc = body.get("error_description")
        text = f"{body['error']}: {desc}" if isinstance(desc, str) and desc else str(body["error"])
        return OAuthError(f"{what}: {text}", body["error"], status)
    return OAuthError(f"{what}: HTTP {status}", None, status)


# ---------------------------------------------------------------------------------------------------------------
# discovery


def normalize_gateway(url: str) -> str:
    s = urllib.parse.urlsplit(url.strip())
    if s.scheme not in ("http", "https") or not s.hostname:
        raise click.BadParameter(f"{url!r} is not an http(s) URL", param_hint="--gateway")
    if s.query or s.fragment:
        raise click.BadParameter("the gateway URL takes no query or fragment", param_hint="--gateway")
    if s.scheme == "http" and not _is_loopback(s.hostname):
        log.warning("the gateway %s is plain HTTP on a non-loopback address: tokens would travel in clear", url)
    return urllib.parse.urlunsplit((s.scheme, s.netloc, s.path.rstrip("/"), "", ""))


def _is_loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


def resource_url(gateway: str, server: str | None) -> str:
    return f"{gateway}/mcp/{server}" if server else gateway


def cache_keys(gateway: str, server: str | None) -> list[CacheKey]:
    """Entries that can serve ``server``: its own endpoint's, then the gateway-wide one (accepted everywhere)."""
    keys = [CacheKey(gateway, resource_url(gateway, server))] if server else []
    keys.append(CacheKey(gateway, gateway))
    return keys


def metadata_urls(gateway: str, server: str | None) -> list[tuple[str, str]]:
    """(metadata URL, the resource it must describe): the path form for ``server``, then the root form (RFC 9728)."""
    s = urllib.parse.urlsplit(gateway)
    out = []
    if server:
        out.append((f"{s.scheme}://{s.netloc}{PRM_PATH}{s.path}/mcp/{server}", resource_url(gateway, server)))
    out.append((f"{s.scheme}://{s.netloc}{PRM_PATH}{s.path}", gateway))
    return out


def authorization_server_metadata_urls(issuer: str) -> list[str]:
    """Where an issuer's metadata may live, in the order the MCP spec tries them (RFC 8414 path insertion, then
    OpenID Connect Discovery with path insertion and appended)."""
    s = urllib.parse.urlsplit(issuer)
    base = f"{s.scheme}://{s.netloc}"
    path = s.path.rstrip("/")
    if not path:
        return [f"{base}/.well-known/oauth-authorization-server", f"{base}/.well-known/openid-configuration"]
    return [
        f"{base}/.well-known/oauth-authorization-server{path}",
        f"{base}/.well-known/openid-configuration{path}",
        f"{base}{path}/.well-known/openid-configuration",
    ]


@dataclass(frozen=True, slots=True)
class ResourceMetadata:
    resource: str
    authorization_servers: list[str]
    scopes_supported: list[str]


async def fetch_resource_metadata(http: OAuthHttp, gateway: str, server: str | None) -> ResourceMetadata:
    tried = []
    for url, expected in metadata_urls(gateway, server):
        status, doc = await http.get_json(url)
        tried.append(f"{url}: HTTP {status}")
        if status == 404:
            if server and expected != gateway:
                log.warning("the gateway has no metadata for %r; logging in for the gateway as a whole", server)
            continue
        if status != 200 or not isinstance(doc, dict):
            raise OAuthError(f"protected-resource metadata {url}: HTTP {status}")
        resource = doc.get("resource")
        if resource != expected:
            # RFC 9728 §3.3: metadata that describes another resource must not be used (it could get us a token
            # for someone else's service, sent to this one)
            raise OAuthError(
                f"{url} describes the resource {resource!r}, not {expected!r}; use the gateway's advertised URL "
                "with --gateway"
            )
        servers = doc.get("authorization_servers")
        if not isinstance(servers, list) or not servers or not all(isinstance(x, str) for x in servers):
            raise OAuthError(f"{url} names no authorization server")
        scopes = doc.get("scopes_supported")
        scope_list = [x for x in scopes if isinstance(x, str)] if isinstance(scopes, list) else []
        return ResourceMetadata(expected, list(servers), scope_list)
    raise OAuthError(
        f"the gateway serves no protected-resource metadata ({'; '.join(tried)}): does it require authentication?"
    )


async def fetch_authorization_server(http: OAuthHttp, issuer: str) -> dict[str, Any]:
    for url in authorization_server_metadata_urls(issuer):
        status, doc = await http.get_json(url)
        if status != 200 or not isinstance(doc, dict):
            continue
        if doc.get("issuer") != issuer:
            raise OAuthError(f"{url} names the issuer {doc.get('issuer')!r}, not {issuer!r} (RFC 8414 §3.3)")
        if not isinstance(doc.get("token_endpoint"), str):
            raise OAuthError(f"{url} names no token_endpoint")
        return doc
    raise OAuthError(f"no authorization server metadata found for {issuer}")


# ---------------------------------------------------------------------------------------------------------------
# registration and tokens


async def register_client(
    http: OAuthHttp, asm: Mapping[str, Any], grant_types: list[str], redirect_uri: str | None, scope: str | None
) -> ClientRegistration:
    endpoint = asm.get("registration_endpoint")
    if not isinstance(endpoint, str):
        raise OAuthError(
            "the authorization server offers no dynamic client registration; register a public client there and "
            "pass its id with --client-id"
        )
    body: dict[str, Any] = {
        "client_name": CLIENT_NAME,
        "application_type": "native",
        "token_endpoint_auth_method": "none",
        "grant_types": grant_types,
        "response_types": ["code"] if "authorization_code" in grant_types else [],
    }
    if redirect_uri is not None:
        body["redirect_uris"] = [redirect_uri]
    if scope:
        body["scope"] = scope
    status, doc = await http.post_json(endpoint, body)
    if status not in (200, 201) or not isinstance(doc, dict) or not isinstance(doc.get("client_id"), str):
        raise _oauth_error("dynamic client registration failed", status, doc)
    secret = doc.get("client_secret")
    return ClientRegistration(
        client_id=doc["client_id"],
        client_secret=secret if isinstance(secret, str) else None,
        token_endpoint_auth_method=str(doc.get("token_endpoint_auth_method", "none")),
        grant_types=[str(g) for g in doc.get("grant_types", grant_types)],
        redirect_uris=[str(u) for u in doc.get("redirect_uris", [redirect_uri] if redirect_uri else [])],
        registered=True,
    )


def token_set(body: Any, now: float, previous_refresh: str | None = None) -> TokenSet:
    """A token endpoint's success answer as a :class:`TokenSet` (a refresh answer may omit the refresh token)."""
    if not isinstance(body, dict) or not isinstance(body.get("access_token"), str) or not body["access_token"]:
        raise OAuthError("the token endpoint answered without an access token")
    token_type = body.get("token_type", "Bearer")
    if not isinstance(token_type, str) or token_type.lower() != "bearer":
        raise OAuthError(f"unsupported token type {token_type!r} (only Bearer)")
    expires_in = body.get("expires_in")
    expires_at = None
    if isinstance(expires_in, int | float) and not isinstance(expires_in, bool) and expires_in > 0:
        expires_at = now + float(expires_in)
    refresh = body.get("refresh_token")
    scope = body.get("scope")
    return TokenSet(
        access_token=body["access_token"],
        token_type="Bearer",
        refresh_token=refresh if isinstance(refresh, str) and refresh else previous_refresh,
        expires_at=expires_at,
        scope=scope if isinstance(scope, str) else None,
        obtained_at=now,
    )


def _client_auth(client: ClientRegistration, form: dict[str, str]) -> tuple[str, str] | None:
    """Add the client's identity to a token request form; returns HTTP Basic credentials when it has a secret."""
    if client.client_secret and client.token_endpoint_auth_method == "client_secret_post":
        form["client_id"] = client.client_id
        form["client_secret"] = client.client_secret
        return None
    if client.client_secret and client.token_endpoint_auth_method != "none":
        return (client.client_id, client.client_secret)
    form["client_id"] = client.client_id
    return None


async def token_request(
    http: OAuthHttp, endpoint: str, client: ClientRegistration, form: dict[str, str]
) -> tuple[int, Any]:
    basic = _client_auth(client, form)
    return await http.post_form(endpoint, form, basic)


async def refresh_token(http: OAuthHttp, entry: LoginEntry, now: Callable[[], float] = time.time) -> TokenSet:
    assert entry.token is not None and entry.token.refresh_token
    form = {"grant_type": "refresh_token", "refresh_token": entry.token.refresh_token, "resource": entry.key.resource}
    status, body = await token_request(http, entry.token_endpoint, entry.client, form)
    if status != 200:
        raise _oauth_error("the token refresh was refused", status, body)
    return token_set(body, now(), entry.token.refresh_token)


async def fresh_entry(
    cache: TokenCache,
    key: CacheKey,
    http: OAuthHttp,
    *,
    failed: str | None = None,
    now: Callable[[], float] = time.time,
) -> LoginEntry:
    """The cached login for ``key`` with an access token worth sending, refreshed first when it is expired (or is
    the ``failed`` one the gateway just refused). The decision and the refresh happen under the entry's lock after
    re-reading it, so concurrent processes spend a rotating refresh token once.

    Raises LoginRequired (nothing usable; a refused refresh token is dropped from the cache) or OAuthError (the
    authorization server could not be reached: the cache is left as it was).
    """
    async with cache.lock(key):
        entry = cache.load(key)
        if entry is None or entry.token is None:
            raise LoginRequired("no cached login")
        action = token_action(entry.token, now(), failed)
        if action == "use":
            return entry
        if action == "login":
            raise LoginRequired("the cached token expired (or was refused) and there is no refresh token")
        try:
            token = await refresh_token(http, entry, now)
        except OAuthError as exc:
            if exc.status is not None and 400 <= exc.status < 500:
                entry.token = None
                cache.save(entry)
                raise LoginRequired(str(exc.message)) from None
            raise
        entry.token = token
        cache.save(entry)
        log.info("refreshed the access token for %s", key.resource)
        return entry


# ---------------------------------------------------------------------------------------------------------------
# authorization code + PKCE with a loopback listener


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(64)  # 86 characters of [A-Za-z0-9_-] (RFC 7636: 43..128)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).rstrip(b"=").decode()
    return verifier, challenge


def add_query(url: str, params: Mapping[str, str]) -> str:
    s = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(s.query, keep_blank_values=True) + list(params.items())
    return urllib.parse.urlunsplit((s.scheme, s.netloc, s.path, urllib.parse.urlencode(query), s.fragment))


def check_callback(query: Mapping[str, str], state: str, issuer: str, iss_required: bool) -> str:
    """The authorization code from a redirect's query, after checking ``state`` and (RFC 9207) ``iss``."""
    got_state = query.get("state", "")
    if not hmac.compare_digest(got_state.encode(), state.encode()):
        raise OAuthError("the login answer carries the wrong state (not our request); try again")
    iss = query.get("iss")
    if iss is not None and iss != issuer:
        raise OAuthError(f"the login answer comes from the issuer {iss!r}, not {issuer!r} (RFC 9207)")
    if iss is None and iss_required:
        raise OAuthError("the login answer lacks the iss parameter its server promised (RFC 9207)")
    if "error" in query:
        desc = query.get("error_description")
        raise OAuthError(f"login refused: {query['error']}" + (f": {desc}" if desc else ""), query["error"])
    code = query.get("code")
    if not code:
        raise OAuthError("the login answer carries no authorization code")
    return code


_DONE_PAGE = (
    "<!doctype html><meta charset=utf-8><title>Portcullis</title>"
    "<body style='font-family:sans-serif'><h3>{}</h3><p>You can close this window.</p>"
)


class LoopbackListener:
    """A one-shot HTTP listener on 127.0.0.1 (random port) for the authorization response (RFC 8252 §7.3)."""

    def __init__(self, state: str) -> None:
        self.state = state
        self._result: asyncio.Future[dict[str, str]] | None = None
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def redirect_uri(self) -> str:
        return f"http://127.0.0.1:{self.port}/callback"

    async def start(self) -> None:
        self._result = asyncio.get_running_loop().create_future()
        app = web.Application()
        app.router.add_get("/callback", self._callback)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server  # aiohttp exposes the bound port only here
        assert server is not None
        sockets = getattr(server, "sockets", None)
        assert sockets
        self.port = int(sockets[0].getsockname()[1])

    async def _callback(self, request: web.Request) -> web.Response:
        query = {k: v for k, v in request.query.items()}
        # only our own request's answer counts: a stray or forged request leaves the flow waiting
        if not hmac.compare_digest(query.get("state", "").encode(), self.state.encode()):
            return web.Response(status=400, text="unknown login request", headers={"Cache-Control": "no-store"})
        assert self._result is not None
        if not self._result.done():
            self._result.set_result(query)
        title = "Login failed." if "error" in query else "Logged in to the Portcullis gateway."
        return web.Response(
            text=_DONE_PAGE.format(html.escape(title)),
            content_type="text/html",
            headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"},
        )

    async def wait(self, within: float) -> dict[str, str]:
        assert self._result is not None
        try:
            async with asyncio.timeout(within):
                return await self._result
        except TimeoutError:
            raise OAuthError(f"no login answer within {within:.0f} s") from None

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


Echo = Callable[[str], None]


def _graphical_session(env: Mapping[str, str] | None = None) -> bool:
    """Whether ``webbrowser`` would start a real browser (not a console one that takes over this terminal)."""
    env = os.environ if env is None else env
    if env.get("BROWSER") or sys.platform in ("darwin", "win32"):
        return True
    return bool(env.get("DISPLAY") or env.get("WAYLAND_DISPLAY"))


async def _open_browser(url: str) -> None:
    if not _graphical_session():
        log.info("no graphical session: not starting a browser")
        return
    try:
        opened = await asyncio.wait_for(asyncio.to_thread(webbrowser.open, url), 10)
    except (TimeoutError, webbrowser.Error, OSError):
        opened = False
    if not opened:
        log.info("could not open a browser; use the printed URL")


def _scope_for(prm: ResourceMetadata, asm: Mapping[str, Any], explicit: str | None) -> str | None:
    """The scopes to ask for: ``--scope``, else the gateway's, plus offline_access when the server offers it (for a
    refresh token)."""
    if explicit is not None:
        return explicit.strip() or None
    scopes = list(prm.scopes_supported)
    offered = asm.get("scopes_supported")
    if isinstance(offered, list) and "offline_access" in offered and "offline_access" not in scopes:
        scopes.append("offline_access")
    return " ".join(scopes) or None


async def code_flow(
    http: OAuthHttp,
    asm: Mapping[str, Any],
    issuer: str,
    resource: str,
    scope: str | None,
    client: ClientRegistration | None,
    *,
    open_browser: bool,
    within: float,
    echo: Echo,
) -> tuple[ClientRegistration, dict[str, Any]]:
    """Authorization code + PKCE: returns the client used and the token endpoint's answer."""
    auth_endpoint = asm.get("authorization_endpoint")
    if not isinstance(auth_endpoint, str):
        raise OAuthError(f"{issuer} names no authorization_endpoint")
    methods = asm.get("code_challenge_methods_supported")
    if not isinstance(methods, list) or "S256" not in methods:
        # the MCP spec: without advertised S256 PKCE support a client must not proceed
        raise OAuthError(f"{issuer} does not advertise PKCE with S256 (code_challenge_methods_supported)")
    state = secrets.token_urlsafe(32)
    verifier, challenge = pkce_pair()
    listener = LoopbackListener(state)
    await listener.start()
    try:
        if client is None:
            client = await register_client(
                http, asm, ["authorization_code", "refresh_token"], listener.redirect_uri, scope
            )
        params = {
            "response_type": "code",
            "client_id": client.client_id,
            "redirect_uri": listener.redirect_uri,
            "state": state,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            "resource": resource,
        }
        if scope:
            params["scope"] = scope
            if "offline_access" in scope.split():
                params["prompt"] = "consent"  # OpenID Connect grants offline_access only with consent
        url = add_query(auth_endpoint, params)
        echo("Log in to the gateway in your browser. If it did not open, open this URL:")
        echo("")
        echo(f"    {url}")
        echo("")
        if open_browser:
            await _open_browser(url)
        code = check_callback(
            await listener.wait(within),
            state,
            issuer,
            asm.get("authorization_response_iss_parameter_supported") is True,
        )
    finally:
        await listener.close()
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": listener.redirect_uri,
        "code_verifier": verifier,
        "resource": resource,
    }
    status, body = await token_request(http, str(asm["token_endpoint"]), client, form)
    if status != 200:
        raise _oauth_error("the authorization code exchange was refused", status, body)
    return client, body if isinstance(body, dict) else {}


# ---------------------------------------------------------------------------------------------------------------
# device authorization grant (RFC 8628)


async def device_flow(
    http: OAuthHttp,
    asm: Mapping[str, Any],
    issuer: str,
    resource: str,
    scope: str | None,
    client: ClientRegistration | None,
    *,
    open_browser: bool,
    within: float,
    echo: Echo,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> tuple[ClientRegistration, dict[str, Any]]:
    endpoint = asm.get("device_authorization_endpoint")
    if not isinstance(endpoint, str):
        raise OAuthError(f"{issuer} does not offer the device authorization grant (no device_authorization_endpoint)")
    if client is None:
        client = await register_client(http, asm, [DEVICE_GRANT, "refresh_token"], None, scope)
    form = {"resource": resource}
    if scope:
        form["scope"] = scope
    status, body = await token_request(http, endpoint, client, form)
    if status != 200 or not isinstance(body, dict):
        raise _oauth_error("the device authorization request was refused", status, body)
    device_code, user_code = body.get("device_code"), body.get("user_code")
    verification = body.get("verification_uri")
    if not (isinstance(device_code, str) and isinstance(user_code, str) and isinstance(verification, str)):
        raise OAuthError("the device authorization answer lacks device_code, user_code or verification_uri")
    complete = body.get("verification_uri_complete")
    interval = float(body["interval"]) if isinstance(body.get("interval"), int | float) else 5.0
    expires_in = float(body["expires_in"]) if isinstance(body.get("expires_in"), int | float) else within
    echo(f"To log in, open {verification} and enter the code:  {user_code}")
    if isinstance(complete, str):
        echo(f"(or open {complete})")
    if open_browser:
        await _open_browser(complete if isinstance(complete, str) else verification)
    deadline = clock() + min(within, expires_in)
    while True:
        if clock() + interval > deadline:
            raise OAuthError(f"the device login was not approved within {min(within, expires_in):.0f} s")
        await sleep(interval)
        form = {"grant_type": DEVICE_GRANT, "device_code": device_code, "resource": resource}
        status, body = await token_request(http, str(asm["token_endpoint"]), client, form)
        if status == 200:
            return client, body if isinstance(body, dict) else {}
        error = body.get("error") if isinstance(body, dict) else None
        if error == "authorization_pending":
            continue
        if error == "slow_down":
            interval += 5.0  # RFC 8628 §3.5
            continue
        raise _oauth_error("the device login ended", status, body)


# ---------------------------------------------------------------------------------------------------------------
# the command


def _claims_for_display(token: str) -> dict[str, Any]:
    """The unverified claims of a JWT access token (shown to the user, never trusted); {} for opaque tokens."""
    parts = token.split(".")
    if len(parts) != 3:
        return {}
    try:
        data = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _describe(entry: LoginEntry, path: Path) -> str:
    assert entry.token is not None
    claims = _claims_for_display(entry.token.access_token)
    who = f" as {claims['sub']}" if isinstance(claims.get("sub"), str) else ""
    until = ""
    if entry.token.expires_at is not None:
        until = time.strftime(" until %Y-%m-%d %H:%M:%S %Z", time.localtime(entry.token.expires_at))
    refresh = ", refreshable" if entry.token.refresh_token else ""
    return f"Logged in to {entry.key.resource}{who}{until}{refresh}. Cached in {path}"


@dataclass(slots=True)
class LoginOptions:
    gateway: str
    server: str | None
    client_id: str | None
    scope: str | None
    device: bool
    open_browser: bool
    print_token: bool
    force: bool
    timeout: float


async def login(opts: LoginOptions, cache: TokenCache, echo: Echo) -> LoginEntry:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT)) as session:
        http = AiohttpOAuth(session)
        prm = await fetch_resource_metadata(http, opts.gateway, opts.server)
        issuer = prm.authorization_servers[0]
        key = CacheKey(opts.gateway, prm.resource)
        cached = cache.load(key)
        if cached is not None and cached.issuer != issuer:
            cached = None  # the gateway trusts another authorization server now
        if cached is not None and opts.client_id is not None and cached.client.client_id != opts.client_id:
            cached = None
        if cached is not None and cached.token is not None and not opts.force:
            try:
                return await fresh_entry(cache, key, http)
            except LoginRequired as exc:
                echo(f"The cached login cannot be used ({exc}); logging in again.")
            except OAuthError as exc:
                echo(f"Could not refresh the cached login ({exc.message}); logging in again.")
        asm = await fetch_authorization_server(http, issuer)
        scope = _scope_for(prm, asm, opts.scope)
        grant = DEVICE_GRANT if opts.device else "authorization_code"
        client: ClientRegistration | None = None
        if opts.client_id is not None:
            client = ClientRegistration(opts.client_id, grant_types=[grant, "refresh_token"])
        elif cached is not None and cached.client.registered and grant in cached.client.grant_types:
            client = cached.client
        flow = device_flow if opts.device else code_flow
        client, body = await flow(
            http,
            asm,
            issuer,
            prm.resource,
            scope,
            client,
            open_browser=opts.open_browser,
            within=opts.timeout,
            echo=echo,
        )
        entry = LoginEntry(key, opts.server, issuer, str(asm["token_endpoint"]), client, token_set(body, time.time()))
        async with cache.lock(key):
            cache.save(entry)
        return entry


@click.command("login")
@click.option("--gateway", required=True, help="the gateway's base URL, e.g. https://gateway.example.com")
@click.option("--server", default=None, help="log in for one server's endpoint (default: the gateway as a whole)")
@click.option("--client-id", default=None, help="a registered public client (default: register one dynamically)")
@click.option("--scope", default=None, help="scopes to ask for (default: the gateway's, plus offline_access)")
@click.option("--device", is_flag=True, help="use the device authorization grant (RFC 8628) instead of a browser")
@click.option("--no-browser", is_flag=True, help="only print the URL to open; do not start a browser")
@click.option("--print-token", is_flag=True, help="print the access token on stdout")
@click.option("--force", is_flag=True, help="log in again even when a usable token is cached")
@click.option("--timeout", default=300.0, show_default=True, help="seconds to wait for the login to complete")
def login_command(
    gateway: str,
    server: str | None,
    client_id: str | None,
    scope: str | None,
    device: bool,
    no_browser: bool,
    print_token: bool,
    force: bool,
    timeout: float,
) -> None:
    """Log in to a gateway (OAuth authorization code + PKCE, or device flow) and cache the token."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    opts = LoginOptions(
        gateway=normalize_gateway(gateway),
        server=server,
        client_id=client_id,
        scope=scope,
        device=device,
        open_browser=not no_browser,
        print_token=print_token,
        force=force,
        timeout=timeout,
    )
    cache = TokenCache(config_dir())

    def echo(text: str) -> None:
        click.echo(text, err=True)

    entry = asyncio.run(login(opts, cache, echo))
    assert entry.token is not None
    echo(_describe(entry, cache.path(entry.key)))
    if print_token:
        click.echo(entry.token.access_token)
