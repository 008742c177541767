"""A real OpenID provider for tests: ``tests/node/oidc_provider.mjs`` (npm ``oidc-provider``) driven over plain HTTP.

The provider runs as a Node 22 child process bound to ``127.0.0.1`` on a free port. It prints
``READY <issuer>`` once listening; :func:`tests.support.procs.start_process` waits for that line
with a hard deadline. Its configuration is the script's defaults (users alice, bob, carol, dave; a
confidential client ``portcullis-service``; scope ``mcp:tools``; RS256 and ES256 keys) deep-merged
with ``config_overrides`` (objects merge, lists and scalars replace, ``None`` deletes a key); see
``DEFAULTS`` in the script for every key.

Everything here is blocking (``urllib``, no proxies, every request bounded by ``timeout``); from
async code use the ``op.aio`` view (the same calls, each run in a worker thread) or
``asyncio.to_thread``. Sync use::

    with running_oidc_provider(tmp_path) as op:
        token = op.user_token("alice", resource="http://127.0.0.1:8080/mcp/demo")
        claims = op.verify(token, resource="http://127.0.0.1:8080/mcp/demo")
        assert claims["groups"] == ["eng", "oncall"]

Async use::

    async with async_running_oidc_provider(tmp_path, {"accessTokenTTL": 60}) as op:
        token = await op.aio.client_credentials_token("http://127.0.0.1:8080/mcp/demo")

Driving a real OAuth client (the MCP Python SDK's ``OAuthClientProvider``): give it a
``redirect_handler`` that remembers the URL and a ``callback_handler`` that completes the login
headlessly::

    async def callback_handler():
        result = await op.aio.authorize(remembered_url, user="alice")
        return AuthorizationCodeResult(code=result.code, state=result.state, iss=result.iss)  # SDK's callback type

Token exchange (RFC 8693, a custom grant of the script): :meth:`OidcProvider.token_exchange` trades a subject token
for one aimed at another resource, as the confidential client ``portcullis-gateway`` (the default
:attr:`OidcProvider.exchange_client`); :meth:`OidcProvider.exchanges` lists every exchange the provider saw::

    gateway_token = op.user_token("alice", resource="http://127.0.0.1:8080/mcp/demo")
    answer = op.token_exchange(gateway_token, resource="http://127.0.0.1:9000/mcp")
    claims = op.verify(answer["access_token"], resource="http://127.0.0.1:9000/mcp")
    assert claims["sub"] == "alice" and claims["act"] == {"sub": "portcullis-gateway"}

Negative tokens: :meth:`OidcProvider.forge_token` signs arbitrary claims with the provider's real
private key (exported by the loopback-only ``/__test__/keys`` hook), and
:meth:`OidcProvider.negative_tokens` returns a named set a correct resource server must reject.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import http.cookiejar
import json
import secrets
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.support.conformance import NODE22, REPO_ROOT, node_env
from tests.support.procs import ManagedProcess, start_process

__all__ = [
    "ACCESS_TOKEN_TYPE",
    "DEFAULT_REDIRECT_URI",
    "DEFAULT_USER_SCOPE",
    "OIDC_PROVIDER_JS",
    "OIDC_PROVIDER_PKG",
    "TOKEN_EXCHANGE_GRANT",
    "AuthorizationResult",
    "OidcError",
    "OidcProvider",
    "RegisteredClient",
    "async_running_oidc_provider",
    "oidc_provider_argv",
    "pkce_pair",
    "running_oidc_provider",
    "start_oidc_provider",
]

OIDC_PROVIDER_JS = REPO_ROOT / "tests" / "node" / "oidc_provider.mjs"
OIDC_PROVIDER_PKG = REPO_ROOT / "node_modules" / "oidc-provider" / "package.json"
DEFAULT_USER_SCOPE = "openid profile email groups mcp:tools"
DEFAULT_REDIRECT_URI = "http://127.0.0.1/callback"
TOKEN_EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
ACCESS_TOKEN_ALGORITHMS = ("RS256", "ES256")

P = ParamSpec("P")
T = TypeVar("T")


class OidcError(RuntimeError):
    """The provider answered with an error (or something unexpected) where the flow needed success."""


@dataclass(frozen=True)
class RegisteredClient:
    """A client created through dynamic client registration (RFC 7591)."""

    client_id: str
    redirect_uri: str
    client_secret: str | None
    metadata: dict[str, Any]


@dataclass(frozen=True)
class AuthorizationResult:
    """What the authorization endpoint finally redirected to the client's ``redirect_uri`` with."""

    redirect_url: str
    code: str | None
    state: str | None
    iss: str | None
    error: str | None
    error_description: str | None
    hops: int


@dataclass(frozen=True)
class _HttpResponse:
    status: int
    headers: Mapping[str, str]
    body: bytes
    url: str

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def location(self) -> str | None:
        value = self.headers.get("Location")
        return urllib.parse.urljoin(self.url, value) if value else None


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # hand 3xx back to the caller (urllib raises HTTPError, which we turn into a response)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_json(value: Any) -> str:
    return _b64url(json.dumps(value, separators=(",", ":")).encode())


def pkce_pair() -> tuple[str, str]:
    """A PKCE ``(code_verifier, code_challenge)`` pair for ``code_challenge_method=S256``."""
    verifier = secrets.token_urlsafe(48)  # 64 characters of [A-Za-z0-9_-]
    return verifier, _b64url(hashlib.sha256(verifier.encode("ascii")).digest())


@dataclass
class OidcProvider:
    """A running provider. ``issuer`` has no trailing slash: it is exactly the discovery document's ``issuer``."""

    proc: ManagedProcess
    issuer: str
    discovery: dict[str, Any]
    config: dict[str, Any]
    timeout: float = 10.0
    started_in: float = 0.0
    """Seconds from spawning the process to its READY line."""
    _opener: urllib.request.OpenerDirector = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._opener = self._new_opener()

    # ---- plumbing -------------------------------------------------------------------------------------------

    @staticmethod
    def _new_opener(jar: http.cookiejar.CookieJar | None = None) -> urllib.request.OpenerDirector:
        handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({}), _NoRedirect()]
        if jar is not None:
            handlers.append(urllib.request.HTTPCookieProcessor(jar))
        return urllib.request.build_opener(*handlers)

    def _request(
        self,
        method: str,
        url: str,
        *,
        form: Mapping[str, str] | None = None,
        json_body: Any = None,
        headers: Mapping[str, str] | None = None,
        opener: urllib.request.OpenerDirector | None = None,
    ) -> _HttpResponse:
        data = None
        all_headers = {"Accept": "application/json", **(headers or {})}
        if form is not None:
            data = urllib.parse.urlencode(form).encode()
            all_headers["Content-Type"] = "application/x-www-form-urlencoded"
        elif json_body is not None:
            data = json.dumps(json_body).encode()
            all_headers["Content-Type"] = "application/json"
        request = urllib.request.Request(url, data=data, method=method, headers=all_headers)
        try:
            with (opener or self._opener).open(request, timeout=self.timeout) as response:
                return _HttpResponse(response.status, dict(response.headers), response.read(), url)
        except urllib.error.HTTPError as err:
            with err:
                return _HttpResponse(err.code, dict(err.headers), err.read(), url)

    def _json(self, method: str, url: str, expect: int = 200, **kwargs: Any) -> Any:
        response = self._request(method, url, **kwargs)
        if response.status != expect:
            raise OidcError(f"{method} {url}: HTTP {response.status}: {response.body[:2000]!r}")
        return response.json()

    # ---- discovery ------------------------------------------------------------------------------------------

    @property
    def jwks_uri(self) -> str:
        return str(self.discovery["jwks_uri"])

    @property
    def token_endpoint(self) -> str:
        return str(self.discovery["token_endpoint"])

    @property
    def authorization_endpoint(self) -> str:
        return str(self.discovery["authorization_endpoint"])

    @property
    def registration_endpoint(self) -> str:
        return str(self.discovery["registration_endpoint"])

    @property
    def service_client(self) -> tuple[str, str]:
        """``(client_id, client_secret)`` of the first configured confidential client."""
        for client in self.config["clients"]:
            if client.get("client_secret"):
                return str(client["client_id"]), str(client["client_secret"])
        raise OidcError("no confidential client configured")

    @property
    def exchange_client(self) -> tuple[str, str]:
        """``(client_id, client_secret)`` of the first configured client allowed the token-exchange grant."""
        for client in self.config["clients"]:
            if client.get("client_secret") and TOKEN_EXCHANGE_GRANT in client.get("grant_types", []):
                return str(client["client_id"]), str(client["client_secret"])
        raise OidcError("no client may use the token-exchange grant")

    def get(self, path: str) -> tuple[int, Any]:
        """GET ``path`` (relative to the issuer, or an absolute URL): ``(status, parsed JSON or None)``."""
        response = self._request("GET", urllib.parse.urljoin(self.issuer + "/", path.lstrip("/")))
        try:
            return response.status, response.json()
        except ValueError:
            return response.status, None

    def jwks(self) -> dict[str, Any]:
        """The public JWKS as served at ``jwks_uri`` right now."""
        return dict(self._json("GET", self.jwks_uri))

    # ---- tokens ---------------------------------------------------------------------------------------------

    def _basic(self, client_id: str, client_secret: str) -> dict[str, str]:
        pair = f"{urllib.parse.quote(client_id, safe='')}:{urllib.parse.quote(client_secret, safe='')}"
        return {"Authorization": f"Basic {base64.b64encode(pair.encode()).decode()}"}

    def token_exchange_raw(
        self,
        subject_token: str,
        *,
        resource: str | None = None,
        audience: str | None = None,
        scope: str | None = None,
        client_id: str | None = None,
        client_secret: str | None = None,
        subject_token_type: str = ACCESS_TOKEN_TYPE,
        requested_token_type: str | None = ACCESS_TOKEN_TYPE,
        extra: Mapping[str, str] | None = None,
    ) -> tuple[int, dict[str, Any]]:
        """An RFC 8693 token-exchange request (client_secret_basic, as :attr:`exchange_client` unless given):
        ``(HTTP status, the token endpoint's JSON)``, errors included."""
        default_id, default_secret = self.exchange_client
        form = {
            "grant_type": TOKEN_EXCHANGE_GRANT,
            "subject_token": subject_token,
            "subject_token_type": subject_token_type,
        }
        for name, value in (
            ("requested_token_type", requested_token_type),
            ("resource", resource),
            ("audience", audience),
            ("scope", scope),
        ):
            if value is not None:
                form[name] = value
        form.update(extra or {})
        headers = self._basic(client_id or default_id, client_secret or default_secret)
        response = self._request("POST", self.token_endpoint, form=form, headers=headers)
        return response.status, dict(response.json())

    def token_exchange(self, subject_token: str, **kwargs: Any) -> dict[str, Any]:
        """The token endpoint's JSON for a successful exchange (see :meth:`token_exchange_raw`)."""
        status, body = self.token_exchange_raw(subject_token, **kwargs)
        if status != 200:
            raise OidcError(f"token exchange refused: HTTP {status}: {body}")
        return body

    def exchanges(self) -> list[dict[str, Any]]:
        """Every token-exchange request that reached the grant handler, in order: ``client_id``, ``ok``,
        ``error``, ``sub``, ``target``, ``jti`` (of the issued token), ``subject_jti``. No tokens."""
        return list(self._json("GET", f"{self.issuer}/__test__/exchanges"))

    def client_credentials_response(
        self,
        resource: str | None,
        scope: str | None = "mcp:tools",
        *,
        client_id: str | None = None,
        client_secret: str | None = None,
    ) -> dict[str, Any]:
        """The token endpoint's JSON for a client-credentials grant (client_secret_basic)."""
        default_id, default_secret = self.service_client
        headers = self._basic(client_id or default_id, client_secret or default_secret)
        form = {"grant_type": "client_credentials"}
        if resource is not None:
            form["resource"] = resource
        if scope:
            form["scope"] = scope
        return dict(self._json("POST", self.token_endpoint, form=form, headers=headers))

    def client_credentials_token(self, resource: str, scope: str | None = "mcp:tools", **kwargs: Any) -> str:
        """A JWT access token for the confidential client, ``aud`` = ``resource``."""
        return str(self.client_credentials_response(resource, scope, **kwargs)["access_token"])

    def register_client(
        self,
        redirect_uri: str = DEFAULT_REDIRECT_URI,
        *,
        token_endpoint_auth_method: str = "none",
        scope: str | None = None,
        **metadata: Any,
    ) -> RegisteredClient:
        """Dynamic client registration (a public client by default), as the MCP SDKs do it."""
        body: dict[str, Any] = {
            "redirect_uris": [redirect_uri],
            "token_endpoint_auth_method": token_endpoint_auth_method,
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "client_name": "portcullis test client",
            **metadata,
        }
        if scope is not None:
            body["scope"] = scope
        answer = self._json("POST", self.registration_endpoint, expect=201, json_body=body)
        return RegisteredClient(answer["client_id"], redirect_uri, answer.get("client_secret"), answer)

    def authorization_url(
        self,
        client: RegisteredClient,
        *,
        code_challenge: str,
        state: str,
        scope: str | None = DEFAULT_USER_SCOPE,
        resource: str | None = None,
        **extra: str,
    ) -> str:
        params = {
            "response_type": "code",
            "client_id": client.client_id,
            "redirect_uri": client.redirect_uri,
            "state": state,
            "code_challenge": code_challenge,
            "code_challenge_method": "S256",
        }
        if scope:
            params["scope"] = scope
        if resource is not None:
            params["resource"] = resource
        params.update(extra)
        return f"{self.authorization_endpoint}?{urllib.parse.urlencode(params)}"

    def authorize(self, authorization_url: str, user: str, *, max_hops: int = 12) -> AuthorizationResult:
        """Play the browser for one authorization request: follow the provider's redirects, log ``user`` in
        through the headless login form (consent is automatic), and stop at the redirect to the client.

        Works for any authorization URL aimed at this provider, including one an SDK built. An unknown
        ``user`` ends in ``error=access_denied`` (returned, not raised).
        """
        opener = self._new_opener(http.cookiejar.CookieJar())
        url, method, form = authorization_url, "GET", None
        own_prefix = self.issuer + "/"
        for hop in range(1, max_hops + 1):
            response = self._request(method, url, form=form, opener=opener, headers={"Accept": "text/html"})
            method, form = "GET", None
            location = response.location
            if response.status in (302, 303) and location:
                if not location.startswith(own_prefix):
                    return _authorization_result(location, hop)
                url = location
                continue
            path = urllib.parse.urlsplit(url).path
            if response.status == 200 and path.startswith("/interaction/"):
                url, method, form = f"{self.issuer}{path.rstrip('/')}/login", "POST", {"user": user}
                continue
            raise OidcError(f"authorization flow stuck at {url}: HTTP {response.status}: {response.body[:2000]!r}")
        raise OidcError(f"authorization flow did not reach the client within {max_hops} hops")

    def exchange_code(
        self,
        client: RegisteredClient,
        code: str,
        code_verifier: str,
        resource: str | None = None,
    ) -> dict[str, Any]:
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": client.redirect_uri,
            "client_id": client.client_id,
            "code_verifier": code_verifier,
        }
        if resource is not None:
            form["resource"] = resource
        return dict(self._json("POST", self.token_endpoint, form=form))

    def refresh(self, client: RegisteredClient, refresh_token: str, resource: str | None = None) -> dict[str, Any]:
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": client.client_id}
        if resource is not None:
            form["resource"] = resource
        return dict(self._json("POST", self.token_endpoint, form=form))

    def user_token_response(
        self,
        user: str,
        resource: str | None,
        scopes: str | None = DEFAULT_USER_SCOPE,
        *,
        client: RegisteredClient | None = None,
        auth_params: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """The full authorization-code + PKCE flow for ``user``: register a public client (unless given), send
        ``/auth`` with ``code_challenge`` and ``resource``, log in headlessly, redeem the code at ``/token`` with
        ``code_verifier`` and ``resource``. Returns the token endpoint's JSON (``access_token``, ``id_token``
        when ``openid`` was asked, ``refresh_token`` when ``offline_access`` was asked together with
        ``prompt=consent`` (oidc-provider drops offline_access otherwise; pass ``auth_params={"prompt": "consent"}``,
        which is what the MCP Python SDK sends), ``expires_in``, ``scope``). ``auth_params``: extra
        authorization-request parameters (e.g. ``login_hint``). ``scopes=None`` sends no scope, which
        oidc-provider answers with ``access_denied`` (it refuses a grant of nothing).
        """
        client = client or self.register_client()
        verifier, challenge = pkce_pair()
        state = secrets.token_urlsafe(16)
        url = self.authorization_url(
            client, code_challenge=challenge, state=state, scope=scopes, resource=resource, **dict(auth_params or {})
        )
        result = self.authorize(url, user)
        if result.error or not result.code:
            raise OidcError(f"authorization failed for {user!r}: {result.error}: {result.error_description}")
        if result.state != state or result.iss != self.issuer:
            raise OidcError(f"authorization response mismatch: state={result.state!r} iss={result.iss!r}")
        return self.exchange_code(client, result.code, verifier, resource)

    def user_token(self, user: str, resource: str, scopes: str | None = DEFAULT_USER_SCOPE, **kwargs: Any) -> str:
        """A JWT access token for ``user`` with ``aud`` = ``resource`` (see :meth:`user_token_response`)."""
        return str(self.user_token_response(user, resource, scopes, **kwargs)["access_token"])

    # ---- verification (what a resource server does) ---------------------------------------------------------

    def verify(self, token: str, resource: str, *, leeway: float = 0) -> dict[str, Any]:
        """Validate ``token`` the way the gateway must: signature against the live JWKS (by ``kid``), alg
        allow-list, ``iss`` == issuer exactly, ``aud`` == ``resource`` exactly (a single string), ``exp``/``iat``
        present and ``exp``/``nbf`` honoured. Returns the claims; raises ``jwt.PyJWTError`` otherwise."""
        header = jwt.get_unverified_header(token)
        keys = {k.get("kid"): k for k in self.jwks()["keys"]}
        if header.get("kid") not in keys:
            raise jwt.InvalidTokenError(f"kid {header.get('kid')!r} is not in the JWKS")
        key = jwt.PyJWK(keys[header["kid"]])
        return dict(
            jwt.decode(
                token,
                key,
                algorithms=list(ACCESS_TOKEN_ALGORITHMS),
                audience=resource,
                issuer=self.issuer,
                leeway=leeway,
                options={"require": ["exp", "iat", "iss", "aud", "sub"], "strict_aud": True},
            )
        )

    # ---- test hooks -----------------------------------------------------------------------------------------

    def signing_keys(self) -> dict[str, Any]:
        """The PRIVATE JWKs (``keys``), ``signing`` (alg -> kid in use) and ``access_token_kid``. Tests only."""
        return dict(self._json("GET", f"{self.issuer}/__test__/keys"))

    def rotate_keys(self, keep_old: bool = True) -> dict[str, Any]:
        """New keys (new kids) sign from now on. ``keep_old``: the old public keys stay in the JWKS (tokens they
        signed still verify), else they are removed. Returns ``signing``, ``access_token_kid``, ``removed``,
        ``jwks``. Registered clients, sessions and grants survive the rotation."""
        return dict(self._json("POST", f"{self.issuer}/__test__/rotate-keys", json_body={"keep_old": keep_old}))

    def set_user(self, user: str, **claims: Any) -> dict[str, Any]:
        """Merge ``claims`` into ``user`` (created when new; a ``None`` value deletes a claim). Tokens issued
        afterwards carry the new claims, e.g. ``op.set_user("bob", groups=["eng", "oncall"])``."""
        account = dict(self._json("PUT", f"{self.issuer}/__test__/users/{urllib.parse.quote(user)}", json_body=claims))
        self.config["users"][user] = account
        return account

    # ---- forged tokens for negative tests -------------------------------------------------------------------

    def token_claims(self, resource: str, user: str = "alice", **overrides: Any) -> dict[str, Any]:
        """Claims shaped like the provider's own access tokens for ``user`` (``None`` in ``overrides`` drops one)."""
        account = self.config["users"][user]
        now = int(time.time())
        claims: dict[str, Any] = {
            claim: account[claim] for claim in self.config["accessTokenClaims"] if claim in account
        }
        claims.update(
            jti=secrets.token_urlsafe(16),
            sub=account.get("sub", user),
            iat=now,
            exp=now + int(self.config["accessTokenTTL"]),
            scope="mcp:tools",
            client_id="forged-client",
            iss=self.issuer,
            aud=resource,
        )
        for name, value in overrides.items():
            if value is None:
                claims.pop(name, None)
            else:
                claims[name] = value
        return claims

    def forge_token(
        self,
        claims: Mapping[str, Any],
        *,
        alg: str | None = None,
        kid: str | None = None,
        key: Any = None,
        headers: Mapping[str, Any] | None = None,
    ) -> str:
        """Sign ``claims`` with the provider's real private key for ``alg`` (default: the access-token alg),
        header ``typ: at+jwt`` and that key's ``kid`` (override with ``kid``/``headers``). Pass ``key`` (a
        ``cryptography`` private key) to sign with some other key instead."""
        exported = self.signing_keys()
        alg = alg or str(exported["access_token_alg"])
        if key is None:
            jwk = next(k for k in exported["keys"] if k["kid"] == exported["signing"][alg])
            key = jwt.PyJWK(jwk).key
            kid = kid or jwk["kid"]
        header: dict[str, Any] = {"typ": "at+jwt", **({"kid": kid} if kid else {}), **(headers or {})}
        return jwt.encode(dict(claims), key, algorithm=alg, headers=header)

    def negative_tokens(self, resource: str, user: str = "alice") -> dict[str, str]:
        """Tokens a correct resource server for ``resource`` must reject, by name. Each differs from a valid
        token (``forge_token(token_claims(resource, user))``, which must be accepted) in one way only."""
        now = int(time.time())
        claims = partial(self.token_claims, resource, user)
        exported = self.signing_keys()
        alg = str(exported["access_token_alg"])
        real_kid = str(exported["access_token_kid"])
        signing_jwk = next(k for k in exported["keys"] if k["kid"] == real_kid)
        foreign_key = _generate_key(alg)

        valid = self.forge_token(claims())
        head, body, signature = valid.split(".")
        tampered_claims = {**json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))), "groups": ["admins"]}

        public_pem = (
            jwt.PyJWK(signing_jwk)
            .key.public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        )
        hs_header = {"alg": "HS256", "typ": "at+jwt", "kid": real_kid}
        hs_signing_input = f"{_b64url_json(hs_header)}.{_b64url_json(claims())}"
        hs_signature = _b64url(hmac.new(public_pem, hs_signing_input.encode(), hashlib.sha256).digest())

        id_token = self.user_token_response(user, resource, "openid")["id_token"]
        return {
            "expired": self.forge_token(claims(iat=now - 7200, exp=now - 3600)),
            "not_yet_valid": self.forge_token(claims(nbf=now + 3600, exp=now + 7200)),
            "wrong_audience": self.forge_token(claims(aud=resource + "-elsewhere")),
            "audience_other_resource": self.forge_token(claims(aud="http://127.0.0.1:1/mcp/other")),
            "no_audience": self.forge_token(claims(aud=None)),
            "wrong_issuer": self.forge_token(claims(iss="http://127.0.0.1:1")),
            "issuer_trailing_slash": self.forge_token(claims(iss=self.issuer + "/")),
            "no_expiry": self.forge_token(claims(exp=None)),
            "unknown_kid": self.forge_token(claims(), key=foreign_key, kid="kid-nobody-published"),
            "bad_signature": self.forge_token(claims(), key=foreign_key, kid=real_kid),
            "tampered_payload": f"{head}.{_b64url_json(tampered_claims)}.{signature}",
            "alg_none": f"{_b64url_json({'alg': 'none', 'typ': 'at+jwt', 'kid': real_kid})}.{_b64url_json(claims())}.",
            "alg_hs256_public_key_as_secret": f"{hs_signing_input}.{hs_signature}",
            "id_token_not_access_token": str(id_token),
        }

    # ---- lifecycle ------------------------------------------------------------------------------------------

    def stop(self, timeout: float = 5.0) -> int | None:
        return self.proc.stop(timeout=timeout)

    @property
    def aio(self) -> _AsyncView:
        """The same calls as coroutines (each runs in a worker thread), for async tests."""
        return _AsyncView(self)


class _AsyncView:
    def __init__(self, op: OidcProvider) -> None:
        self._op = op

    @staticmethod
    async def _run(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        return await asyncio.to_thread(fn, *args, **kwargs)

    async def jwks(self) -> dict[str, Any]:
        return await self._run(self._op.jwks)

    async def client_credentials_token(self, resource: str, scope: str | None = "mcp:tools", **kwargs: Any) -> str:
        return await self._run(self._op.client_credentials_token, resource, scope, **kwargs)

    async def client_credentials_response(self, resource: str | None, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return await self._run(self._op.client_credentials_response, resource, *args, **kwargs)

    async def user_token(self, user: str, resource: str, scopes: str | None = DEFAULT_USER_SCOPE, **kw: Any) -> str:
        return await self._run(self._op.user_token, user, resource, scopes, **kw)

    async def user_token_response(self, user: str, resource: str | None, *args: Any, **kw: Any) -> dict[str, Any]:
        return await self._run(self._op.user_token_response, user, resource, *args, **kw)

    async def token_exchange(self, subject_token: str, **kwargs: Any) -> dict[str, Any]:
        return await self._run(self._op.token_exchange, subject_token, **kwargs)

    async def token_exchange_raw(self, subject_token: str, **kwargs: Any) -> tuple[int, dict[str, Any]]:
        return await self._run(self._op.token_exchange_raw, subject_token, **kwargs)

    async def exchanges(self) -> list[dict[str, Any]]:
        return await self._run(self._op.exchanges)

    async def authorize(self, authorization_url: str, user: str) -> AuthorizationResult:
        return await self._run(self._op.authorize, authorization_url, user)

    async def verify(self, token: str, resource: str, **kwargs: Any) -> dict[str, Any]:
        return await self._run(self._op.verify, token, resource, **kwargs)

    async def rotate_keys(self, keep_old: bool = True) -> dict[str, Any]:
        return await self._run(self._op.rotate_keys, keep_old)

    async def set_user(self, user: str, **claims: Any) -> dict[str, Any]:
        return await self._run(self._op.set_user, user, **claims)

    async def negative_tokens(self, resource: str, user: str = "alice") -> dict[str, str]:
        return await self._run(self._op.negative_tokens, resource, user)


def _authorization_result(location: str, hops: int) -> AuthorizationResult:
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query))
    return AuthorizationResult(
        redirect_url=location,
        code=query.get("code"),
        state=query.get("state"),
        iss=query.get("iss"),
        error=query.get("error"),
        error_description=query.get("error_description"),
        hops=hops,
    )


def _generate_key(alg: str) -> Any:
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def oidc_provider_argv(config_path: Path, port: int = 0) -> list[str]:
    """The command line: Node 22 running ``tests/node/oidc_provider.mjs``."""
    return [str(NODE22), str(OIDC_PROVIDER_JS), "--config", str(config_path), "--port", str(port)]


def start_oidc_provider(
    tmp_path: Path,
    config_overrides: Mapping[str, Any] | None = None,
    *,
    ready_timeout: float = 30.0,
    timeout: float = 10.0,
) -> OidcProvider:
    """Write ``config_overrides`` to ``tmp_path/oidc-provider.json``, start the provider, read its discovery
    document and effective configuration. The caller stops it (``op.stop()``)."""
    if not OIDC_PROVIDER_PKG.exists():
        raise OidcError(
            f"{OIDC_PROVIDER_PKG} is missing: run `npm ci` in {REPO_ROOT} (package.json pins oidc-provider)"
        )
    config_path = tmp_path / "oidc-provider.json"
    config_path.write_text(json.dumps(dict(config_overrides or {}), indent=2))
    started = time.monotonic()
    proc = start_process(
        oidc_provider_argv(config_path), ready_prefix="READY ", ready_timeout=ready_timeout, env=node_env()
    )
    started_in = time.monotonic() - started
    issuer = proc.ready_value
    try:
        if not issuer.startswith("http://127.0.0.1:") or issuer.endswith("/"):
            raise OidcError(f"unexpected issuer on the READY line: {proc.ready_line!r}")
        probe = OidcProvider(proc, issuer, {}, {}, timeout=timeout, started_in=started_in)
        probe.discovery = dict(probe._json("GET", f"{issuer}/.well-known/openid-configuration"))
        probe.config = dict(probe._json("GET", f"{issuer}/__test__/config"))
        if probe.discovery.get("issuer") != issuer:
            raise OidcError(f"discovery issuer {probe.discovery.get('issuer')!r} != READY issuer {issuer!r}")
        return probe
    except BaseException as err:
        proc.stop(timeout=2.0)
        if isinstance(err, OidcError | OSError):
            raise OidcError(f"{err}\n{proc.output()}") from err
        raise


@contextlib.contextmanager
def running_oidc_provider(
    tmp_path: Path, config_overrides: Mapping[str, Any] | None = None, **kwargs: Any
) -> Iterator[OidcProvider]:
    """Context manager around :func:`start_oidc_provider`; kills the provider's process group on exit."""
    op = start_oidc_provider(tmp_path, config_overrides, **kwargs)
    try:
        yield op
    finally:
        op.stop()


@contextlib.asynccontextmanager
async def async_running_oidc_provider(
    tmp_path: Path, config_overrides: Mapping[str, Any] | None = None, **kwargs: Any
) -> AsyncIterator[OidcProvider]:
    """Async variant of :func:`running_oidc_provider` (start and stop run in a worker thread)."""
    op = await asyncio.to_thread(start_oidc_provider, tmp_path, config_overrides, **kwargs)
    try:
        yield op
    finally:
        await asyncio.to_thread(op.stop)
