"""SSRF guard of key discovery: a discovery document may send the gateway for keys only to the issuer's own origin
or to a host the config allows; keys on the issuer's origin load."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from portcullis.identity.jwks import IssuerKeys, JwksError

JWK = {"kty": "oct", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA", "kid": "k1", "alg": "HS256", "use": "sig"}


@pytest.fixture
async def provider() -> AsyncIterator[dict[str, Any]]:
    """An issuer on one port whose discovery names a jwks_uri (set per test)."""
    state: dict[str, Any] = {}

    async def discovery(_r: web.Request) -> web.Response:
        return web.json_response({"issuer": state["issuer"], "jwks_uri": state["jwks_uri"]})

    async def jwks(_r: web.Request) -> web.Response:
        return web.Response(text=json.dumps({"keys": [JWK]}), content_type="application/json")

    app = web.Application()
    app.router.add_get("/.well-known/openid-configuration", discovery)
    app.router.add_get("/jwks", jwks)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    state["issuer"] = f"http://127.0.0.1:{port}"
    try:
        yield state
    finally:
        await runner.cleanup()


async def test_keys_only_from_the_issuers_origin_or_an_allowed_host(provider: dict[str, Any]) -> None:
    async with aiohttp.ClientSession() as http:
        provider["jwks_uri"] = provider["issuer"] + "/jwks"
        same = IssuerKeys(provider["issuer"], http)
        await same.refresh()
        assert same.fetches == 1 and same.jwks_uri == provider["jwks_uri"]

        provider["jwks_uri"] = "http://169.254.169.254/latest/meta-data"  # a metadata service, say
        elsewhere = IssuerKeys(provider["issuer"], http)
        with pytest.raises(JwksError, match=r"names a jwks_uri on another host \(169\.254\.169\.254\)"):
            await elsewhere.refresh()
        allowed_but_plain = IssuerKeys(provider["issuer"], http, jwks_hosts=frozenset({"169.254.169.254"}))
        with pytest.raises(JwksError, match="another host"):  # an allowed host still needs https
            await allowed_but_plain.refresh()
