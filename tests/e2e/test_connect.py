"""Local clients: ``portcullis login`` against the real OpenID provider, and ``portcullis connect`` as the stdio MCP
server of the official Python SDK client, relaying to a gateway that authenticates with that provider.

The last tests run ``portcullis connect`` against a small in-process stand-in for the gateway, to reach the paths a
healthy gateway does not take (401 then refresh, a forgotten session, a stream cut before its answer, no GET stream).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import stat
import sys
import time
import urllib.parse
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from mcp import types
from mcp.client import Client
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.shared.exceptions import MCPError

from portcullis.cli.login import CacheKey, ClientRegistration, LoginEntry, TokenCache, token_set
from portcullis.store.db import make_engine
from portcullis.store.queries import get_session
from tests.support.conformance import REPO_ROOT
from tests.support.gateway import RunningGateway, running_gateway
from tests.support.oidc import OidcProvider
from tests.support.procs import ManagedProcess
from tests.support.records import load_records
from tests.support.waiting import eventually

pytestmark = [pytest.mark.e2e]
node = pytest.mark.node

LOGIN_SCOPES = "mcp:tools offline_access"


@pytest.fixture(scope="module")
def gateway(
    op: OidcProvider, fixture: ManagedProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningGateway]:
    auth = {"mode": "oidc", "issuers": [{"issuer": op.issuer, "scopes_supported": ["mcp:tools"]}]}
    with running_gateway(tmp_path_factory.mktemp("gw"), {"fx": {"url": fixture.ready_value}}, auth=auth) as gw:
        yield gw


def cli_env(config: Path) -> dict[str, str]:
    return {**os.environ, "PORTCULLIS_CONFIG_DIR": str(config)}


def cache_files(config: Path) -> list[Path]:
    return sorted((config / "tokens").glob("*.json"))


def only_entry(config: Path) -> dict[str, Any]:
    files = cache_files(config)
    assert len(files) == 1, files
    data: dict[str, Any] = json.loads(files[0].read_text())
    return data


def seed(
    config: Path,
    op: OidcProvider,
    gateway: str,
    resource: str,
    user: str = "alice",
    *,
    expired: bool = False,
    access_token: str | None = None,
) -> LoginEntry:
    """A cache entry as `portcullis login` would leave it: a registered public client and its tokens."""
    client = op.register_client(scope=LOGIN_SCOPES)
    answer = op.user_token_response(user, resource, LOGIN_SCOPES, client=client, auth_params={"prompt": "consent"})
    tokens = token_set(answer, time.time())
    if expired:
        tokens.expires_at = time.time() - 5
    if access_token is not None:
        tokens.access_token = access_token
    entry = LoginEntry(
        CacheKey(gateway, resource),
        None,
        op.issuer,
        op.token_endpoint,
        ClientRegistration(client.client_id, grant_types=["authorization_code", "refresh_token"], registered=True),
        tokens,
    )
    TokenCache(config).save(entry)
    return entry


def connect_params(gateway: str, config: Path, *extra: str) -> StdioServerParameters:
    return StdioServerParameters(
        command=sys.executable,
        args=["-m", "portcullis", "connect", "fx", "--gateway", gateway, *extra],
        env={"PORTCULLIS_CONFIG_DIR": str(config)},
        cwd=REPO_ROOT,
    )


@contextlib.asynccontextmanager
async def stdio_sdk_client(
    gateway: str, config: Path, errlog: Path, mode: str = "legacy", **kwargs: Any
) -> AsyncIterator[Client]:
    with errlog.open("w") as err:
        async with Client(stdio_client(connect_params(gateway, config), errlog=err), mode=mode, **kwargs) as c:
            yield c


def mcp_errors(exc: BaseException) -> list[MCPError]:
    if isinstance(exc, MCPError):
        return [exc]
    if isinstance(exc, BaseExceptionGroup):
        return [e for sub in exc.exceptions for e in mcp_errors(sub)]
    return []


async def initialize_error(gateway: str, config: Path, errlog: Path) -> MCPError:
    """The JSON-RPC error the SDK client got for its initialize (it raises it inside an exception group)."""
    try:
        async with asyncio.timeout(60), stdio_sdk_client(gateway, config, errlog):
            pass
    except BaseException as exc:  # the SDK raises the error inside exception groups
        found = mcp_errors(exc)
        if not found:
            raise
        return found[0]
    raise AssertionError("initialize succeeded")


# ---------------------------------------------------------------------------------------------------------------
# login


async def read_login_url(proc: asyncio.subprocess.Process, seen: list[str]) -> str:
    assert proc.stderr is not None
    while True:
        raw = await proc.stderr.readline()
        if not raw:
            raise AssertionError("login exited before printing the URL:\n" + "".join(seen))
        line = raw.decode()
        seen.append(line)
        if "/auth?" in line:
            return line.strip()


async def run_login(
    op: OidcProvider, config: Path, gateway: str, *extra: str, user: str | None = "alice"
) -> tuple[int, str, str, str]:
    """Run `portcullis login --no-browser`; when it prints an authorization URL, play the browser for ``user``
    (the provider's headless login, then the final redirect to the loopback listener). Returns exit code, stdout,
    stderr and the authorization URL ("" when the cached login sufficed)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "portcullis",
        "login",
        "--gateway",
        gateway,
        "--no-browser",
        "--timeout",
        "60",
        *extra,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=cli_env(config),
        cwd=REPO_ROOT,
    )
    seen: list[str] = []
    url = ""
    url_task = asyncio.ensure_future(read_login_url(proc, seen))
    exited = asyncio.ensure_future(proc.wait())
    try:
        async with asyncio.timeout(60):
            if user is None:
                url_task.cancel()
            else:
                done, _ = await asyncio.wait({url_task, exited}, return_when=asyncio.FIRST_COMPLETED)
                if url_task in done:
                    url = url_task.result()
                    result = await op.aio.authorize(url, user)
                    assert result.code and not result.error, result
                    async with aiohttp.ClientSession() as http, http.get(result.redirect_url) as r:  # the last hop
                        assert r.status == 200
                        assert "Logged in" in await r.text()
                else:
                    url_task.cancel()
            out, err = await proc.communicate()
    finally:
        url_task.cancel()
        if proc.returncode is None:
            proc.kill()
        await exited
    return proc.returncode or 0, out.decode(), "".join(seen) + err.decode(), url


@node
async def test_login_headless_then_cached_then_refreshed(
    gateway: RunningGateway, op: OidcProvider, tmp_path: Path
) -> None:
    config = tmp_path / "config"
    resource = gateway.url("fx")

    code, out, err, url = await run_login(op, config, gateway.base, "--server", "fx")
    assert code == 0, err
    assert out == ""  # no --print-token: nothing on stdout
    assert f"Logged in to {resource} as alice" in err
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))
    assert url.startswith(op.authorization_endpoint + "?")
    assert query["resource"] == resource and query["code_challenge_method"] == "S256"
    assert query["redirect_uri"].startswith("http://127.0.0.1:") and query["redirect_uri"].endswith("/callback")
    assert set(query["scope"].split()) == {"mcp:tools", "offline_access"}

    # the cache: private files in private directories, keyed by gateway + resource
    assert stat.S_IMODE(config.stat().st_mode) == 0o700
    assert stat.S_IMODE((config / "tokens").stat().st_mode) == 0o700
    (path,) = cache_files(config)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    entry = only_entry(config)
    assert entry["gateway"] == gateway.base and entry["resource"] == resource and entry["issuer"] == op.issuer
    assert entry["client"]["registered"] and entry["client"]["client_id"]
    token = entry["token"]
    assert token["refresh_token"] and token["expires_at"] > time.time() + 60
    claims = op.verify(token["access_token"], resource)
    assert claims["sub"] == "alice"
    assert token["access_token"] not in err and token["refresh_token"] not in err

    # again: the cached token is used as it is (no browser), printed only when asked
    code, out, err, url = await run_login(op, config, gateway.base, "--server", "fx", "--print-token", user=None)
    assert code == 0, err
    assert url == "" and out.strip() == token["access_token"]

    # expired: refreshed with the refresh token, which the provider rotates
    data = json.loads(path.read_text())
    data["token"]["expires_at"] = time.time() - 10
    path.write_text(json.dumps(data))
    code, out, err, url = await run_login(op, config, gateway.base, "--server", "fx", "--print-token", user=None)
    assert code == 0, err
    assert url == ""
    fresh = only_entry(config)["token"]
    assert out.strip() == fresh["access_token"] != token["access_token"]
    assert fresh["refresh_token"] != token["refresh_token"]
    assert op.verify(fresh["access_token"], resource)["sub"] == "alice"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@node
async def test_login_for_the_whole_gateway_uses_the_root_metadata(
    gateway: RunningGateway, op: OidcProvider, tmp_path: Path
) -> None:
    config = tmp_path / "config"
    code, out, err, _url = await run_login(op, config, gateway.base + "/", "--print-token", user="bob")
    assert code == 0, err
    entry = only_entry(config)
    assert entry["resource"] == gateway.base
    assert op.verify(out.strip(), gateway.base)["sub"] == "bob"


@node
async def test_login_refuses_metadata_for_another_resource(
    gateway: RunningGateway, op: OidcProvider, tmp_path: Path
) -> None:
    """RFC 9728 §3.3: the metadata found under a URL must describe that URL's resource, else it is not used (here the
    gateway advertises its 127.0.0.1 address and is asked as localhost)."""
    port = urllib.parse.urlsplit(gateway.base).port
    code, _out, err, url = await run_login(
        op, tmp_path / "config", f"http://localhost:{port}", "--server", "fx", user=None
    )
    assert code != 0 and url == ""
    assert f"describes the resource '{gateway.url('fx')}', not 'http://localhost:{port}/mcp/fx'" in err
    assert not cache_files(tmp_path / "config")


# ---------------------------------------------------------------------------------------------------------------
# connect with the official SDK client over stdio


@node
async def test_sdk_client_over_stdio_reaches_the_gateway_as_alice(
    gateway: RunningGateway, op: OidcProvider, tmp_path: Path
) -> None:
    config = tmp_path / "config"
    entry = seed(config, op, gateway.base, gateway.url("fx"))
    assert entry.token is not None
    seen: list[float] = []
    asked: list[types.CreateMessageRequestParams] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append(progress)

    async def sampling(ctx: object, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        asked.append(params)
        return types.CreateMessageResult(
            role="assistant", content=types.TextContent(type="text", text="sampled via stdio"), model="m"
        )

    errlog = tmp_path / "connect.log"
    async with asyncio.timeout(60):
        async with stdio_sdk_client(gateway.base, config, errlog, sampling_callback=sampling) as c:
            assert c.protocol_version == "2025-11-25"
            names = {t.name for t in (await c.list_tools()).tools}
            echo = await c.call_tool("echo", {"text": "through stdio"})
            prog = await c.call_tool("test_tool_with_progress", {}, progress_callback=on_progress)
            sampled = await c.call_tool("test_sampling", {"prompt": "hello from stdio"})
            concurrent = await asyncio.gather(*(c.call_tool("echo", {"text": f"n{i}"}) for i in range(5)))

    assert {"echo", "test_tool_with_progress", "test_sampling"} <= names
    assert echo.content[0].text == "through stdio"  # type: ignore[union-attr]
    assert seen == [0, 50, 100] and not prog.is_error
    assert sampled.content[0].text == "LLM response: sampled via stdio"  # type: ignore[union-attr]
    assert [r.content[0].text for r in concurrent] == [f"n{i}" for i in range(5)]  # type: ignore[union-attr]
    assert len(asked) == 1
    content = asked[0].messages[0].content
    assert isinstance(content, types.TextContent) and content.text == "hello from stdio"

    # the gateway recorded every call under alice, in one session that the relay ended on stdin EOF
    recs = load_records(gateway.store)
    calls = [r for r in recs if r["method"] == "tools/call" and r["direction"] == "c2s" and r["kind"] == "request"]
    mine = [
        r for r in calls if b"through stdio" in (r["payload"] or b"") or b"hello from stdio" in (r["payload"] or b"")
    ]
    assert len(mine) == 2
    sid = mine[0]["session_id"]
    session = [r for r in recs if r["session_id"] == sid]
    for r in session:
        if r["principal"]:
            assert json.loads(r["principal"])["sub"] == "alice"
    tools = {json.loads(r["payload"])["params"]["name"] for r in session if r in calls}
    assert tools == {"echo", "test_tool_with_progress", "test_sampling"}
    assert any(r["method"] == "sampling/createMessage" and r["direction"] == "s2c" for r in session)
    answer = [r for r in session if r["direction"] == "c2s" and r["kind"] == "result"]
    assert any(b"sampled via stdio" in (r["payload"] or b"") for r in answer)
    engine = make_engine(gateway.store)
    try:
        ended = get_session(engine, sid)
    finally:
        engine.dispose()
    assert ended is not None and ended["end_reason"] == "client ended the session"

    log_text = errlog.read_text()
    assert entry.token.access_token not in log_text
    assert entry.token.refresh_token is None or entry.token.refresh_token not in log_text


@node
async def test_connect_refreshes_an_expired_token_first(
    gateway: RunningGateway, op: OidcProvider, tmp_path: Path
) -> None:
    config = tmp_path / "config"
    old = seed(config, op, gateway.base, gateway.url("fx"), "bob", expired=True)
    assert old.token is not None
    async with asyncio.timeout(60), stdio_sdk_client(gateway.base, config, tmp_path / "connect.log") as c:
        r = await c.call_tool("echo", {"text": "refreshed"})
    assert r.content[0].text == "refreshed"  # type: ignore[union-attr]
    fresh = only_entry(config)["token"]
    assert fresh["access_token"] != old.token.access_token and fresh["refresh_token"] != old.token.refresh_token
    assert fresh["expires_at"] > time.time()
    assert op.verify(fresh["access_token"], gateway.url("fx"))["sub"] == "bob"


@node
async def test_connect_uses_a_gateway_wide_login(gateway: RunningGateway, op: OidcProvider, tmp_path: Path) -> None:
    config = tmp_path / "config"
    seed(config, op, gateway.base, gateway.base, "carol")
    async with asyncio.timeout(60), stdio_sdk_client(gateway.base, config, tmp_path / "connect.log") as c:
        r = await c.call_tool("echo", {"text": "gateway-wide"})
    assert r.content[0].text == "gateway-wide"  # type: ignore[union-attr]


@node
async def test_connect_without_a_usable_login_says_how_to_log_in(
    gateway: RunningGateway, op: OidcProvider, tmp_path: Path
) -> None:
    # nothing cached
    no_login = await initialize_error(gateway.base, tmp_path / "none", tmp_path / "a.log")
    assert f"portcullis login --gateway {gateway.base} --server fx" in no_login.message
    assert no_login.data == {"login": f"portcullis login --gateway {gateway.base} --server fx"}

    # a token the gateway refuses (another endpoint's audience) and a refresh token the provider refuses
    config = tmp_path / "config"
    wrong = op.user_token("alice", gateway.base + "/mcp/elsewhere")
    entry = seed(config, op, gateway.base, gateway.url("fx"), access_token=wrong)
    assert entry.token is not None
    path = cache_files(config)[0]
    data = json.loads(path.read_text())
    data["token"]["refresh_token"] = "not-a-refresh-token"
    path.write_text(json.dumps(data))
    refused = await initialize_error(gateway.base, config, tmp_path / "b.log")
    assert "portcullis login" in refused.message and "refused" in refused.message
    assert only_entry(config)["token"] is None  # the dead tokens are dropped; the client registration stays
    assert only_entry(config)["client"]["client_id"] == entry.client.client_id
    assert wrong not in (tmp_path / "b.log").read_text()


@node
async def test_a_2026_client_over_stdio(gateway: RunningGateway, op: OidcProvider, tmp_path: Path) -> None:
    config = tmp_path / "config"
    seed(config, op, gateway.base, gateway.url("fx"))
    async with (
        asyncio.timeout(60),
        stdio_sdk_client(gateway.base, config, tmp_path / "connect.log", mode="2026-07-28") as c,
    ):
        assert c.protocol_version == "2026-07-28"
        r = await c.call_tool("echo", {"text": "stateless über stdio"})
    assert r.content[0].text == "stateless über stdio"  # type: ignore[union-attr]


@node
async def test_a_forgotten_session_is_reinitialized(gateway: RunningGateway, op: OidcProvider, tmp_path: Path) -> None:
    config = tmp_path / "config"
    entry = seed(config, op, gateway.base, gateway.url("fx"))
    assert entry.token is not None
    async with asyncio.timeout(60), stdio_sdk_client(gateway.base, config, tmp_path / "connect.log") as c:
        first = await c.call_tool("echo", {"text": "before-the-cut"})
        recs = load_records(gateway.store)
        sid = next(r["session_id"] for r in recs if b"before-the-cut" in (r["payload"] or b""))
        headers = {"Authorization": f"Bearer {entry.token.access_token}", "Mcp-Session-Id": sid}
        async with aiohttp.ClientSession() as http, http.delete(gateway.url("fx"), headers=headers) as r:
            assert r.status == 200  # the gateway forgets the session behind the relay's back
        second = await c.call_tool("echo", {"text": "after-the-cut"})
    assert first.content[0].text == "before-the-cut"  # type: ignore[union-attr]
    assert second.content[0].text == "after-the-cut"  # type: ignore[union-attr]
    recs = [r for r in load_records(gateway.store) if b"after-the-cut" in (r["payload"] or b"")]
    assert any(r["session_id"] == sid and r["direction"] == "gw" for r in recs)  # the relay met the 404 ...
    calls = [r for r in recs if r["direction"] == "c2s" and r["kind"] == "request"]
    assert len(calls) == 1 and calls[0]["session_id"] not in (sid, None)  # ... and retried in a new session


# ---------------------------------------------------------------------------------------------------------------
# the relay against a stand-in gateway (raw JSON lines on stdin/stdout)

INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}},
}
INITIALIZED = {"jsonrpc": "2.0", "method": "notifications/initialized"}


def result(msg_id: Any, value: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": msg_id, "result": value}


def sse(*events: tuple[str | None, Any]) -> bytes:
    return b"".join(
        (f"id: {eid}\n".encode() if eid else b"") + b"event: message\ndata: " + json.dumps(m).encode() + b"\n\n"
        for eid, m in events
    )


class FakeGateway:
    """Just enough of a session-era gateway: sessions S1, S2, ...; bearer tokens checked against ``valid``; a token
    endpoint at /token that rotates refresh tokens; each tools/call answered by ``tools[name]``."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, str], Any]] = []
        self.valid = {"good"}
        self.refresh = {"r1": ("good", "r2")}
        self.sessions: set[str] = set()
        self.get_stream: bytes | None = None  # None: GET answers 405
        self.resume: dict[str, bytes] = {}
        self.hold = asyncio.Event()
        self.deleted: list[str] = []
        self.base = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/mcp/fx", self.mcp)
        app.router.add_post("/token", self.token)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.base = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]

    async def stop(self) -> None:
        self.hold.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def token(self, request: web.Request) -> web.Response:
        form = dict(await request.post())
        self.seen.append(("TOKEN", dict(request.headers), form))
        pair = self.refresh.pop(str(form.get("refresh_token")), None)
        if form.get("grant_type") != "refresh_token" or pair is None:
            return web.json_response({"error": "invalid_grant"}, status=400)
        return web.json_response({"access_token": pair[0], "refresh_token": pair[1], "expires_in": 600})

    async def mcp(self, request: web.Request) -> web.StreamResponse:
        body = await request.json() if request.method == "POST" else None
        self.seen.append((request.method, dict(request.headers), body))
        auth = request.headers.get("Authorization", "")
        if auth.removeprefix("Bearer ") not in self.valid:
            return web.json_response({"error": "unauthorized"}, status=401, headers={"WWW-Authenticate": "Bearer"})
        sid = request.headers.get("Mcp-Session-Id")
        if isinstance(body, dict) and body.get("method") == "initialize":
            new = f"S{len(self.sessions) + 1}"
            self.sessions.add(new)
            answer = result(body["id"], {"protocolVersion": "2025-11-25", "capabilities": {}, "serverInfo": {}})
            return web.json_response(answer, headers={"Mcp-Session-Id": new})
        if sid not in self.sessions:
            return web.json_response(
                {"jsonrpc": "2.0", "id": None, "error": {"code": -32001, "message": "gone"}}, status=404
            )
        if request.method == "DELETE":
            self.deleted.append(sid)
            self.sessions.discard(sid)
            return web.Response(status=200)
        if request.method == "GET":
            last = request.headers.get("Last-Event-ID")
            if last is not None:
                return await self._stream(request, self.resume[last], hold=False)
            if self.get_stream is None:
                return web.Response(status=405)
            return await self._stream(request, self.get_stream, hold=True)
        if not isinstance(body, dict) or "method" not in body or "id" not in body:
            return web.Response(status=202)
        if body["method"] == "tools/call":
            name = body["params"]["name"]
            if name == "cut":  # a progress event, then the stream ends before the answer (resumed with GET)
                self.resume["c.1"] = sse(("c.2", result(body["id"], {"content": [], "resumed": True})))
                return await self._stream(
                    request,
                    sse(
                        (
                            "c.1",
                            {
                                "jsonrpc": "2.0",
                                "method": "notifications/progress",
                                "params": {"progressToken": 1, "progress": 1},
                            },
                        )
                    ),
                    hold=False,
                )
            if name == "bad-params":
                error = {"jsonrpc": "2.0", "id": body["id"], "error": {"code": -32602, "message": "bad params"}}
                return web.json_response(error, status=400)
            if name == "crash":
                return web.Response(status=500, text="boom")
            if name == "slow":
                await self.hold.wait()
            return web.json_response(result(body["id"], {"content": [{"type": "text", "text": name}]}))
        return web.json_response(result(body["id"], {}))

    async def _stream(self, request: web.Request, data: bytes, *, hold: bool) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(data)
        if hold:
            await self.hold.wait()
        return resp

    def methods(self) -> list[tuple[str, Any]]:
        return [(m, b.get("method") if isinstance(b, dict) else b) for m, _, b in self.seen]


@pytest.fixture
async def fake() -> AsyncIterator[FakeGateway]:
    gw = FakeGateway()
    await gw.start()
    try:
        yield gw
    finally:
        await gw.stop()


class Connect:
    """`portcullis connect fx` as a child process, spoken to in raw JSON lines (every read bounded)."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, gateway: str, config: Path, *extra: str) -> Connect:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "portcullis",
            "connect",
            "fx",
            "--gateway",
            gateway,
            *extra,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=cli_env(config),
            cwd=REPO_ROOT,
        )
        return cls(proc)

    async def send(self, *msgs: Any, raw: bytes | None = None) -> None:
        assert self.proc.stdin is not None
        for m in msgs:
            self.proc.stdin.write(json.dumps(m).encode() + b"\n")
        if raw is not None:
            self.proc.stdin.write(raw)
        await self.proc.stdin.drain()

    async def recv(self) -> Any:
        assert self.proc.stdout is not None
        async with asyncio.timeout(15):
            line = await self.proc.stdout.readline()
        assert line.endswith(b"\n"), f"connect ended its output: {line!r}"
        return json.loads(line)

    async def finish(self) -> tuple[int, bytes, str]:
        """Close stdin; the exit code, whatever else it wrote on stdout, and its stderr."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        async with asyncio.timeout(15):
            out, err = await self.proc.communicate()
        return self.proc.returncode or 0, out, err.decode()

    def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()


@contextlib.asynccontextmanager
async def connected(gateway: str, config: Path, *extra: str) -> AsyncIterator[Connect]:
    c = await Connect.start(gateway, config, *extra)
    try:
        yield c
    finally:
        c.kill()
        await c.proc.wait()


def seed_fake(
    config: Path, fake: FakeGateway, access: str, refresh: str | None = None, expires_in: float = 600
) -> None:
    TokenCache(config).save(
        LoginEntry(
            CacheKey(fake.base, f"{fake.base}/mcp/fx"),
            "fx",
            fake.base,
            f"{fake.base}/token",
            ClientRegistration("cli", registered=True),
            token_set({"access_token": access, "refresh_token": refresh, "expires_in": expires_in}, time.time()),
        )
    )


async def test_relay_scripted_session_and_delete_on_eof(fake: FakeGateway, tmp_path: Path) -> None:
    seed_fake(tmp_path, fake, "good")
    async with connected(fake.base, tmp_path) as c:
        await c.send(INIT, INITIALIZED, {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "a"}})
        code, out, err = await c.finish()  # stdin closes at once: the request in flight is still answered
    lines = [json.loads(x) for x in out.splitlines()]
    assert lines[0]["result"]["protocolVersion"] == "2025-11-25"
    assert lines[1] == result(2, {"content": [{"type": "text", "text": "a"}]})
    assert code == 0 and fake.deleted == ["S1"]
    # (the standalone GET may or may not have gone out before stdin closed; the relay test below covers it)
    assert [m for m in fake.methods() if m[0] != "GET"] == [
        ("POST", "initialize"),
        ("POST", "notifications/initialized"),
        ("POST", "tools/call"),
        ("DELETE", None),
    ]
    for method, headers, _ in fake.seen[1:]:
        assert headers["Mcp-Session-Id"] == "S1" and headers["MCP-Protocol-Version"] == "2025-11-25", method
        assert headers["Authorization"] == "Bearer good"
    assert "good" not in err


async def test_relay_refreshes_after_a_401_and_retries(fake: FakeGateway, tmp_path: Path) -> None:
    seed_fake(tmp_path, fake, "revoked", "r1")  # not expired, but the gateway refuses it
    async with connected(fake.base, tmp_path) as c:
        await c.send(INIT)
        assert (await c.recv())["result"]["protocolVersion"] == "2025-11-25"
        code, _, err = await c.finish()
    assert code == 0
    auths = [(m, h.get("Authorization")) for m, h, _ in fake.seen if m != "TOKEN"]
    assert auths[:2] == [("POST", "Bearer revoked"), ("POST", "Bearer good")]
    token_calls = [b for m, _, b in fake.seen if m == "TOKEN"]
    assert token_calls == [
        {"grant_type": "refresh_token", "refresh_token": "r1", "resource": f"{fake.base}/mcp/fx", "client_id": "cli"}
    ]
    cached = only_entry(tmp_path)["token"]
    assert cached["access_token"] == "good" and cached["refresh_token"] == "r2"
    assert "revoked" not in err and "r1" not in err.split()


async def test_relay_resumes_a_stream_cut_before_its_answer(fake: FakeGateway, tmp_path: Path) -> None:
    seed_fake(tmp_path, fake, "good")
    async with connected(fake.base, tmp_path) as c:
        await c.send(INIT)
        await c.recv()
        await c.send({"jsonrpc": "2.0", "id": "x", "method": "tools/call", "params": {"name": "cut"}})
        assert (await c.recv())["method"] == "notifications/progress"
        assert await c.recv() == result("x", {"content": [], "resumed": True})
        await c.finish()
    resumed = [h for m, h, _ in fake.seen if m == "GET" and "Last-Event-ID" in h]
    assert len(resumed) == 1 and resumed[0]["Last-Event-ID"] == "c.1"


async def test_relay_carries_the_standalone_stream_and_answers_to_it(fake: FakeGateway, tmp_path: Path) -> None:
    seed_fake(tmp_path, fake, "good")
    roots = {"jsonrpc": "2.0", "id": 7, "method": "roots/list"}
    changed = {"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}
    fake.get_stream = sse(("g.1", changed), ("g.2", roots))
    async with connected(fake.base, tmp_path) as c:
        await c.send(INIT)
        await c.recv()
        await c.send(INITIALIZED)
        assert await c.recv() == changed
        assert await c.recv() == roots
        await c.send(result(7, {"roots": []}))  # the client's answer goes back as a POST
        await c.send({"jsonrpc": "2.0", "id": 3, "method": "ping"})
        assert await c.recv() == result(3, {})
        code, _, _ = await c.finish()
    assert code == 0
    posts = [b for m, _, b in fake.seen if m == "POST"]
    assert result(7, {"roots": []}) in posts


async def test_relay_turns_failures_into_errors_for_each_request(fake: FakeGateway, tmp_path: Path) -> None:
    seed_fake(tmp_path, fake, "good")
    async with connected(fake.base, tmp_path, "--max-line", "2000") as c:
        await c.send(INIT)
        await c.recv()
        await c.send(raw=b"this is not json\n")
        assert (await c.recv())["error"]["code"] == -32700
        await c.send(raw=b'{"jsonrpc": "2.0", "id": 9, "method": "ping", "params": {"pad": "' + b"x" * 5000 + b'"}}\n')
        big = await c.recv()
        assert big["id"] is None and "larger than 2000 bytes" in big["error"]["message"]
        await c.send({"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {"name": "bad-params"}})
        assert await c.recv() == {"jsonrpc": "2.0", "id": 4, "error": {"code": -32602, "message": "bad params"}}
        await c.send({"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {"name": "crash"}})
        crash = await c.recv()
        assert crash["id"] == 5 and crash["error"]["code"] == -32001 and "HTTP 500" in crash["error"]["message"]
        await c.send({"jsonrpc": "2.0", "id": 6, "method": "tools/call", "params": {"name": "fine"}})
        assert (await c.recv())["id"] == 6  # still relaying after all that
        await c.finish()


async def test_relay_answers_when_the_gateway_is_unreachable(tmp_path: Path) -> None:
    with contextlib.closing(__import__("socket").socket()) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connections are refused
        async with connected(f"http://127.0.0.1:{port}", tmp_path) as c:
            await c.send(INIT)
            err = await c.recv()
            code, _, _ = await c.finish()
    assert err["id"] == 1 and err["error"]["code"] == -32001 and "cannot be reached" in err["error"]["message"]
    assert code == 0


async def test_relay_stops_promptly_on_sigterm_and_ends_the_session(fake: FakeGateway, tmp_path: Path) -> None:
    seed_fake(tmp_path, fake, "good")
    async with connected(fake.base, tmp_path) as c:
        await c.send(INIT)
        await c.recv()
        await c.send({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "slow"}})
        await eventually(lambda: ("POST", "tools/call") in fake.methods(), what="the slow call reached the gateway")
        c.proc.terminate()
        async with asyncio.timeout(10):
            code = await c.proc.wait()
    assert code == 0 and fake.deleted == ["S1"]
