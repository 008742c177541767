"""Masking end to end: a real gateway process, real MCP servers, the official Python SDK client.

Two upstreams leak planted secrets (``tests/support/masking.py``): server-everything over stdio, whose ``get-env``
tool returns its whole environment, and the leaky fixture (``tests/fixtures/leaky_server.py``, Python SDK over
Streamable HTTP), which leaks them in every place a response can carry text. The client is the SDK's, on an HTTP
transport that keeps every byte it receives: each test asserts that no planted literal reached the client (and,
for the store, that no planted literal is anywhere in the SQLite files), and that the typed label is where the
secret was.

Gateways (one per module, each with its own store):

* ``gw``: default masking (label mode, every default class) plus a forensic key, so each masked original is
  sealed into its record;
* ``gw_choices``: pseudonyms for e-mail, partial cards, a custom ``employee_id`` rule, a per-server profile
  (``second``, the same leaky upstream, does not mask e-mail), and a small candidate budget.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import jsonschema  # type: ignore[import-untyped]
import pytest
from mcp import types
from mcp.client import ClientRequestContext
from mcp.shared.exceptions import MCPError

from tests.support.gateway import REPO_ROOT, RunningGateway, everything_stdio, running_gateway
from tests.support.masking import (
    PLANTED,
    Tap,
    db_files_bytes,
    leaked,
    leaky_server_argv,
    leaky_server_env,
    tapped_client,
)
from tests.support.procs import ManagedProcess, running_process
from tests.support.records import load_records
from tests.support.waiting import eventually

pytestmark = pytest.mark.e2e

P = PLANTED
# Everything the default profile must keep from the client (employee ids are only masked by the custom rule).
SECRETS = {k: v for k, v in P.items() if k != "employee_id"}
DB_URL_MASKED = "postgres://app:[REDACTED:uri_credentials]@db.internal:5432/app"
BLOCKED = "Response blocked: it could not be masked"
STAGE_FAILED = -32004

EVERYTHING_ENV = {
    "AWS_ACCESS_KEY_ID": P["aws_access_key_id"],
    "AWS_SECRET_ACCESS_KEY": P["aws_secret_access_key"],
    "GITHUB_TOKEN": P["github_token"],
    "DATABASE_URL": f"postgres://app:{P['db_password']}@db:5432/app",
    "STRIPE_API_KEY": P["stripe_key"],
    "SUPPORT_EMAIL": P["email"],
    # hard negatives: must survive untouched
    "DEPLOY_COLOR": "blue-green",
    "BUILD_SHA": "9fceb02d0ae598e95dc970b74767f19372d61af8",
    "REQUEST_ID": "3f2b8c1e-7d4a-4e9b-a1c2-5f6e7d8c9b0a",
    "APP_VERSION": "v2.14.3",
}


def portcullis(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "portcullis", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO_ROOT,
        check=False,
    )


def assert_nothing_leaked(data: bytes | str, secrets: dict[str, str] = SECRETS) -> None:
    found = leaked(data, secrets.values())
    names = [k for k, v in secrets.items() if v in found]
    assert not names, f"planted values reached the client unmasked: {names}"


def text_of(block: Any) -> str:
    assert isinstance(block, types.TextContent), block
    return block.text


async def decline(ctx: ClientRequestContext, params: types.ElicitRequestParams) -> types.ElicitResult:
    return types.ElicitResult(action="decline")


async def answer_ok(ctx: ClientRequestContext, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
    return types.CreateMessageResult(
        role="assistant", content=types.TextContent(type="text", text="ok"), model="test-model"
    )


# --- peers ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def leaky() -> Iterator[ManagedProcess]:
    with running_process(leaky_server_argv(), env=leaky_server_env(), ready_timeout=30) as p:
        yield p


@pytest.fixture(scope="module")
def forensic_keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("forensic")
    priv, pub = d / "forensic.key", d / "forensic.pub"
    r = portcullis("forensic", "keygen", "--private", str(priv), "--public", str(pub))
    assert r.returncode == 0, r.stderr
    assert (priv.stat().st_mode & 0o777) == 0o600
    return priv, pub


@pytest.fixture(scope="module")
def gw(
    leaky: ManagedProcess, forensic_keys: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningGateway]:
    servers = {
        "leaky": {"url": leaky.ready_value},
        "everything": {**everything_stdio(), "env": EVERYTHING_ENV},
    }
    masking = {"forensic": {"public_key_file": str(forensic_keys[1])}}
    with running_gateway(tmp_path_factory.mktemp("gw"), servers, masking=masking) as g:
        yield g


@pytest.fixture(scope="module")
def gw_choices(leaky: ManagedProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    servers = {"leaky": {"url": leaky.ready_value}, "second": {"url": leaky.ready_value}}
    masking = {
        "modes": {"email": "pseudonym", "credit_card": "partial"},
        "servers": {"second": {"exclude": ["email"]}},
        "rules": [{"name": "employee_id", "pattern": "EMP-[0-9]{6}", "kind": "pii"}],
        "max_candidates": 1000,
    }
    with running_gateway(tmp_path_factory.mktemp("gw-choices"), servers, masking=masking) as g:
        yield g


# --- 1. server-everything over stdio: get-env ------------------------------------------------------------------


@pytest.mark.node
async def test_everything_get_env_is_masked(gw: RunningGateway) -> None:
    async with tapped_client(gw.url("everything")) as (c, tap):
        names = {t.name for t in (await c.list_tools()).tools}
        assert "get-env" in names, names
        r = await c.call_tool("get-env", {})
    env = json.loads(text_of(r.content[0]))
    assert env["AWS_ACCESS_KEY_ID"] == "[REDACTED:aws_access_key_id]"
    assert env["AWS_SECRET_ACCESS_KEY"] == "[REDACTED:aws_secret_access_key]"
    assert env["GITHUB_TOKEN"] == "[REDACTED:github_token]"
    assert env["DATABASE_URL"] == "postgres://app:[REDACTED:uri_credentials]@db:5432/app"
    assert env["STRIPE_API_KEY"] == "[REDACTED:stripe_key]"
    assert env["SUPPORT_EMAIL"] == "[REDACTED:email]"
    # innocuous values survive
    assert env["PATH"] == os.environ["PATH"]
    for k in ("DEPLOY_COLOR", "BUILD_SHA", "REQUEST_ID", "APP_VERSION"):
        assert env[k] == EVERYTHING_ENV[k], k
    assert_nothing_leaked(tap.received())


# --- 2. every place a response carries text ---------------------------------------------------------------------


async def test_structured_content_and_text_twin_stay_consistent_and_valid(gw: RunningGateway) -> None:
    async with tapped_client(gw.url("leaky")) as (c, tap):
        tool = next(t for t in (await c.list_tools()).tools if t.name == "customers")
        r = await c.call_tool("customers", {})  # the SDK validates structuredContent against outputSchema too
    assert tool.output_schema is not None and r.structured_content is not None
    sc = r.structured_content
    assert json.loads(text_of(r.content[0])) == sc  # the text twin was masked the same way
    jsonschema.validate(sc, tool.output_schema)
    ada, alan = sc["rows"]
    assert ada["email"] == alan["email"] == "[REDACTED:email]"
    assert ada["card"] == "[REDACTED:credit_card]"
    assert ada["phone"] == "[REDACTED:phone_number]"
    assert ada["iban"] == "[REDACTED:iban]"
    assert ada["password"] == "[REDACTED:password_assignment]"
    assert sc["contact"] == "escalate to [REDACTED:email]"
    # innocuous values survive
    assert (ada["id"], ada["name"], ada["plan"], alan["card"], sc["total"]) == (
        1,
        "Ada Lovelace",
        "enterprise",
        "n/a",
        2,
    )
    assert ada["employee_id"] == P["employee_id"]  # no rule for it in this gateway
    assert_nothing_leaked(tap.received())


async def test_mixed_content_blocks(gw: RunningGateway) -> None:
    async with tapped_client(gw.url("leaky")) as (c, tap):
        r = await c.call_tool("mixed", {})
    text, embedded, blob, image = r.content
    assert text_of(text) == "deploy token [REDACTED:github_token] for [REDACTED:email]"
    assert isinstance(embedded, types.EmbeddedResource) and isinstance(embedded.resource, types.TextResourceContents)
    assert "AWS_ACCESS_KEY_ID=[REDACTED:aws_access_key_id]" in embedded.resource.text
    assert "APP_NAME=billing" in embedded.resource.text
    assert isinstance(blob, types.EmbeddedResource) and isinstance(blob.resource, types.BlobResourceContents)
    users = base64.b64decode(blob.resource.blob, validate=True).decode()
    assert "1,Ada Lovelace,[REDACTED:email],[REDACTED:phone_number],[REDACTED:credit_card],[REDACTED:us_ssn]" in users
    # an image is binary: its bytes pass untouched, even where they happen to spell an address
    assert isinstance(image, types.ImageContent)
    png = base64.b64decode(image.data)
    assert png.startswith(b"\x89PNG") and png.endswith(f"tEXtAuthor\x00{P['email']}".encode())
    assert_nothing_leaked(tap.received())


async def test_notifications_are_masked_event_by_event_as_they_stream(gw: RunningGateway) -> None:
    """Log and progress notifications arrive masked, in order, while the call is still open.

    The tool ends with a sampling request and cannot return before the client answers it: the client's sampling
    callback waits (bounded) until every notification has reached the client, so they streamed through the
    gateway one by one, not buffered until the result.
    """
    steps = 3
    seen: list[tuple[str, Any]] = []
    at_barrier: list[tuple[str, Any]] = []

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        seen.append(("log", params.data))

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append(("progress", (progress, message)))

    async def barrier(ctx: ClientRequestContext, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        await eventually(lambda: len(seen) >= 3 * steps, within=10, what="every notification before the barrier")
        at_barrier.extend(seen)
        return await answer_ok(ctx, params)

    async with tapped_client(gw.url("leaky"), logging_callback=on_log, sampling_callback=barrier) as (c, tap):
        r = await c.call_tool("chatty", {"steps": steps}, progress_callback=on_progress)
    assert text_of(r.content[0]) == f"chatty finished {steps} steps"

    assert len(at_barrier) == 3 * steps
    logs = [d for kind, d in at_barrier if kind == "log"]
    progress = [d for kind, d in at_barrier if kind == "progress"]
    assert sorted(d for d in logs if isinstance(d, str)) == [
        f"step {i}: connecting to {DB_URL_MASKED}" for i in (1, 2, 3)
    ]
    assert sorted((d for d in logs if isinstance(d, dict)), key=lambda d: d["step"]) == [
        {"step": i, "user": "[REDACTED:email]", "token": "[REDACTED:github_token]"} for i in (1, 2, 3)
    ]
    assert sorted(progress) == [(i, f"step {i} of {steps} as [REDACTED:stripe_key]") for i in (1, 2, 3)]

    # on the wire: each step's notifications in the order the server sent them, then the barrier, then the result
    wire = tap.messages()
    during = ("notifications/message", "notifications/progress", "sampling/createMessage")
    stream = [m for m in wire if m.get("method") in during or "chatty finished" in json.dumps(m.get("result"))]
    methods = [m.get("method", "result") for m in stream]
    step_methods = ["notifications/message", "notifications/message", "notifications/progress"]
    assert methods == step_methods * steps + ["sampling/createMessage", "result"], methods
    for i in range(steps):
        msg, obj, prog = stream[3 * i : 3 * i + 3]
        assert msg["params"]["data"] == f"step {i + 1}: connecting to {DB_URL_MASKED}"
        assert obj["params"]["data"]["user"] == "[REDACTED:email]"
        assert prog["params"]["progress"] == i + 1
    assert_nothing_leaked(tap.received())


async def test_resources_read_text_and_blob(gw: RunningGateway) -> None:
    async with tapped_client(gw.url("leaky")) as (c, tap):
        env = (await c.read_resource("leaky://config/app.env")).contents[0]
        users = (await c.read_resource("leaky://dump/users.txt")).contents[0]
        pixel = (await c.read_resource("leaky://img/pixel.png")).contents[0]
    assert isinstance(env, types.TextResourceContents)
    text = env.text
    for line in (
        "AWS_ACCESS_KEY_ID=[REDACTED:aws_access_key_id]",
        "AWS_SECRET_ACCESS_KEY=[REDACTED:aws_secret_access_key]",
        "GITHUB_TOKEN=[REDACTED:github_token]",
        "GITLAB_TOKEN=[REDACTED:gitlab_token]",
        "STRIPE_SECRET=[REDACTED:stripe_key]",
        "OPENAI_API_KEY=[REDACTED:llm_api_key]",
        "SLACK_WEBHOOK_URL=[REDACTED:slack_webhook]",
        "SESSION_JWT=[REDACTED:jwt]",
        f"DATABASE_URL={DB_URL_MASKED}",
        "ADMIN_PASSWORD=[REDACTED:password_assignment]",
        "SUPPORT_EMAIL=[REDACTED:email]",
        "[REDACTED:private_key]",
        "APP_NAME=billing",
        "LOG_LEVEL=info",
    ):
        assert line in text.splitlines(), (line, text)
    assert isinstance(users, types.BlobResourceContents) and users.mime_type == "text/plain"
    decoded = base64.b64decode(users.blob, validate=True).decode()  # still valid base64
    assert decoded.splitlines() == [
        "id,name,email,phone,card,ssn",
        "1,Ada Lovelace,[REDACTED:email],[REDACTED:phone_number],[REDACTED:credit_card],[REDACTED:us_ssn]",
        "2,Alan Turing,[REDACTED:email],n/a,n/a,n/a",
    ]
    assert isinstance(pixel, types.BlobResourceContents) and pixel.mime_type == "image/png"
    assert base64.b64decode(pixel.blob).endswith(f"tEXtAuthor\x00{P['email']}".encode())  # binary: untouched
    assert_nothing_leaked(tap.received())


async def test_prompt_messages(gw: RunningGateway) -> None:
    async with tapped_client(gw.url("leaky")) as (c, tap):
        got = await c.get_prompt("incident", {"service": "billing"})
    user, assistant, embedded = got.messages
    assert text_of(user.content) == (
        f"billing is down. It uses {DB_URL_MASKED} and key [REDACTED:aws_access_key_id]; "
        "customer [REDACTED:email] (card [REDACTED:credit_card]) is affected."
    )
    assert text_of(assistant.content) == "I will rotate [REDACTED:github_token] first."
    assert isinstance(embedded.content, types.EmbeddedResource)
    assert isinstance(embedded.content.resource, types.TextResourceContents)
    assert "GITHUB_TOKEN=[REDACTED:github_token]" in embedded.content.resource.text
    assert_nothing_leaked(tap.received())


async def test_tool_errors(gw: RunningGateway) -> None:
    async with tapped_client(gw.url("leaky")) as (c, tap):
        r = await c.call_tool("fail_tool", {})
        with pytest.raises(MCPError) as err:
            await c.call_tool("fail_protocol", {})
    assert r.is_error is True
    assert text_of(r.content[0]) == (
        f"Error executing tool fail_tool: cannot connect to {DB_URL_MASKED} as [REDACTED:email] "
        "(token [REDACTED:github_token])"
    )
    e = err.value.error
    assert e.code == -32602  # the upstream's error, masked, not replaced
    assert e.message == "key [REDACTED:aws_access_key_id] is not allowed for [REDACTED:email]"
    assert e.data == {"stripe": "[REDACTED:stripe_key]", "dsn": DB_URL_MASKED, "hint": "rotate it"}
    assert_nothing_leaked(tap.received())


async def test_server_to_client_requests(gw: RunningGateway) -> None:
    """sampling/createMessage and elicitation/create reach the client's callbacks masked."""
    asked: list[types.CreateMessageRequestParams] = []
    elicited: list[types.ElicitRequestParams] = []

    async def sampling(
        ctx: ClientRequestContext, params: types.CreateMessageRequestParams
    ) -> types.CreateMessageResult:
        asked.append(params)
        return await answer_ok(ctx, params)

    async def elicit(ctx: ClientRequestContext, params: types.ElicitRequestParams) -> types.ElicitResult:
        elicited.append(params)
        return await decline(ctx, params)

    async with tapped_client(gw.url("leaky"), sampling_callback=sampling, elicitation_callback=elicit) as (c, tap):
        r1 = await c.call_tool("ask_llm", {})
        r2 = await c.call_tool("ask_user", {})
    assert text_of(r1.content[0]) == "LLM said: ok"
    assert text_of(r2.content[0]) == "user answered decline"
    (params,) = asked
    assert [text_of(m.content) for m in params.messages] == [
        "Is [REDACTED:aws_access_key_id] still active? Ask [REDACTED:email].",
        f"The DSN is {DB_URL_MASKED}; card [REDACTED:credit_card].",
    ]
    assert params.system_prompt == "You are an SRE. The admin token is [REDACTED:github_token]."
    (eparams,) = elicited
    assert eparams.message == "Rotate the Stripe key [REDACTED:stripe_key] owned by [REDACTED:email]?"
    assert_nothing_leaked(tap.received())


# --- 3. modes and choices -----------------------------------------------------------------------------------------

PSEUDO_EMAIL = re.compile(r"^user-[0-9a-f]{12}@masked\.invalid$")


async def _customers(url: str, calls: int = 1) -> tuple[list[dict[str, Any]], Tap, dict[str, Any]]:
    async with tapped_client(url) as (c, tap):
        schema = next(t for t in (await c.list_tools()).tools if t.name == "customers").output_schema
        out = []
        for _ in range(calls):
            r = await c.call_tool("customers", {})
            assert r.structured_content is not None
            assert json.loads(text_of(r.content[0])) == r.structured_content
            out.append(r.structured_content)
    assert schema is not None
    return out, tap, schema


async def test_pseudonyms_are_stable_in_a_session_and_differ_across_sessions(gw_choices: RunningGateway) -> None:
    (first, again), tap1, schema = await _customers(gw_choices.url("leaky"), calls=2)
    (other,), tap2, _ = await _customers(gw_choices.url("leaky"))
    ada, alan = first["rows"]
    assert PSEUDO_EMAIL.match(ada["email"]) and PSEUDO_EMAIL.match(alan["email"]), (ada, alan)
    assert ada["email"] != alan["email"]  # two customers stay two customers
    assert first["contact"] == f"escalate to {ada['email']}"  # the same address, the same pseudonym
    assert again == first  # the same session: the same pseudonyms
    assert other["rows"][0]["email"] != ada["email"]  # another session: another pseudonym
    assert PSEUDO_EMAIL.match(other["rows"][0]["email"])
    # partial cards keep their last four digits; other classes keep the default label
    assert ada["card"] == "**** **** **** " + P["card"][-4:]
    assert ada["phone"] == "[REDACTED:phone_number]"
    assert ada["employee_id"] == "[REDACTED:employee_id]"  # the custom rule
    jsonschema.validate(first, schema)
    for tap in (tap1, tap2):
        assert_nothing_leaked(tap.received(), P)


async def test_per_server_profile(gw_choices: RunningGateway) -> None:
    (masked,), tap1, _ = await _customers(gw_choices.url("leaky"))
    (visible,), tap2, _ = await _customers(gw_choices.url("second"))  # same upstream, e-mail excluded
    assert PSEUDO_EMAIL.match(masked["rows"][0]["email"])
    assert visible["rows"][0]["email"] == P["email"]
    assert visible["rows"][1]["email"] == P["email2"]
    # everything else in the base profile still applies there
    assert visible["rows"][0]["card"] == "**** **** **** " + P["card"][-4:]
    assert visible["rows"][0]["employee_id"] == "[REDACTED:employee_id]"
    assert visible["rows"][0]["iban"] == "[REDACTED:iban]"
    assert_nothing_leaked(tap1.received(), P)
    assert_nothing_leaked(tap2.received(), {k: v for k, v in P.items() if k not in ("email", "email2")})


# --- 4. records: masked payload, what was masked where, the sealed original ----------------------------------------


async def test_record_keeps_the_masked_payload_and_a_sealed_original(
    gw: RunningGateway, forensic_keys: tuple[Path, Path], tmp_path: Path
) -> None:
    async with tapped_client(gw.url("leaky")) as (c, tap):
        await c.call_tool("customers", {})
    (seen,) = [m for m in tap.messages() if "structuredContent" in m.get("result", {})]
    recs = load_records(gw.store)
    rec = [
        r
        for r in recs
        if (r["server"], r["method"], r["direction"], r["kind"]) == ("leaky", "tools/call", "s2c", "result")
        and b"structuredContent" in (r["payload"] or b"")
    ][-1]
    payload = json.loads(rec["payload"])
    assert payload == seen  # the record keeps exactly what the client saw
    assert payload["result"]["structuredContent"]["rows"][0]["email"] == "[REDACTED:email]"
    assert_nothing_leaked(rec["payload"])
    masked = json.loads(rec["masked"])
    where = {(m["class"], m["path"]) for m in masked}
    assert {
        ("email", "result.structuredContent.rows[0].email"),
        ("email", "result.structuredContent.rows[1].email"),
        ("credit_card", "result.structuredContent.rows[0].card"),
        ("phone_number", "result.structuredContent.rows[0].phone"),
        ("iban", "result.structuredContent.rows[0].iban"),
        ("password_assignment", "result.structuredContent.rows[0].password"),
    } <= where, where
    assert {"email", "credit_card", "phone_number", "iban"} <= {c for c, p in where if p == "result.content[0].text"}
    assert all(isinstance(m["count"], int) and m["count"] >= 1 for m in masked)
    assert rec["sealed"] is not None and not leaked(rec["sealed"], SECRETS.values())

    # break glass: only the private key opens the original
    opened = portcullis(
        "forensic", "open", str(rec["seq"]), "--key", str(forensic_keys[0]), "--config", str(gw.config_path)
    )
    assert opened.returncode == 0, opened.stderr
    original = json.loads(opened.stdout)
    ada = original["result"]["structuredContent"]["rows"][0]
    assert (ada["email"], ada["card"], ada["password"]) == (P["email"], P["card"], P["password"])
    other_priv = tmp_path / "other.key"
    r = portcullis("forensic", "keygen", "--private", str(other_priv), "--public", str(tmp_path / "other.pub"))
    assert r.returncode == 0, r.stderr
    wrong = portcullis("forensic", "open", str(rec["seq"]), "--key", str(other_priv), "--config", str(gw.config_path))
    assert wrong.returncode != 0 and P["email"] not in wrong.stdout + wrong.stderr


async def test_the_store_never_holds_a_planted_secret(gw: RunningGateway) -> None:
    """After leaky calls of every kind, not one planted literal is in the SQLite files (sealed copies included)."""
    async with tapped_client(gw.url("leaky"), sampling_callback=answer_ok, elicitation_callback=decline) as (c, _t):
        await c.call_tool("customers", {})
        await c.call_tool("mixed", {})
        await c.call_tool("chatty", {"steps": 2})
        await c.call_tool("fail_tool", {})
        await c.read_resource("leaky://config/app.env")
        await c.read_resource("leaky://dump/users.txt")
        await c.get_prompt("incident", {})
    recs = load_records(gw.store)
    assert any(r["sealed"] is not None for r in recs)
    for r in recs:
        for col in ("payload", "detail", "masked"):
            if r[col] is not None:
                assert not leaked(r[col], SECRETS.values()), (r["seq"], r["method"], col)
    raw = db_files_bytes(gw.store)
    assert_nothing_leaked(raw)
    assert b"[REDACTED:email]" in raw and b"[REDACTED:github_token]" in raw


# --- 5. hostile input, bounded --------------------------------------------------------------------------------------


async def test_a_ten_megabyte_line_is_masked_in_bounded_time(gw: RunningGateway) -> None:
    size = 10 * 1024 * 1024
    async with tapped_client(gw.url("leaky")) as (c, tap):
        with anyio.fail_after(30):
            r = await c.call_tool("big_line", {"size": size})
    text = text_of(r.content[0])
    assert "\n" not in text and len(text) > size - 1000
    assert text.startswith("start [REDACTED:aws_access_key_id] [REDACTED:email] ")
    assert " middle [REDACTED:github_token] [REDACTED:credit_card] " in text
    assert text.endswith(f" end [REDACTED:stripe_key] {DB_URL_MASKED}")
    assert_nothing_leaked(tap.received())


@pytest.mark.parametrize("kind", ["dict", "list"])
async def test_deep_nesting_fails_closed(gw: RunningGateway, kind: str) -> None:
    async with tapped_client(gw.url("leaky")) as (c, tap):
        with pytest.raises(MCPError) as err:
            await c.call_tool("deep", {"depth": 200, "kind": kind})
        # a structure within max_depth is walked to the bottom and masked there
        r = await c.call_tool("deep", {"depth": 30, "kind": kind})
    assert err.value.error.code == STAGE_FAILED
    assert err.value.error.message.startswith(BLOCKED), err.value.error.message
    assert "deeper than 64" in err.value.error.message
    assert r.structured_content is not None
    node = r.structured_content["tree"]
    for _ in range(30):
        node = node["child"] if kind == "dict" else node[0]
    assert node == ({"leaf": "[REDACTED:email]"} if kind == "dict" else [])
    assert_nothing_leaked(tap.received())
    blocked = [
        r
        for r in load_records(gw.store)
        if r["method"] == "tools/call" and r["direction"] == "s2c" and (r["detail"] or "").startswith(BLOCKED)
    ]
    assert blocked, "the blocked response is not recorded"
    rec = blocked[-1]
    assert rec["outcome"] == "failed"
    assert json.loads(rec["payload"])["error"]["code"] == STAGE_FAILED
    assert b"child" not in rec["payload"] and not leaked(rec["payload"], SECRETS.values())


async def test_an_unmaskable_notification_is_not_delivered(gw: RunningGateway) -> None:
    logs: list[Any] = []

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        logs.append(params.data)

    async with tapped_client(gw.url("leaky"), logging_callback=on_log) as (c, tap):
        r = await c.call_tool("deep_log", {"depth": 200})
        assert text_of(r.content[0]) == "deep_log done"
        await eventually(lambda: logs, within=5, what="the second log notification")
    assert logs == ["after the deep one: [REDACTED:email]"]
    assert [m["params"]["data"] for m in tap.messages() if m.get("method") == "notifications/message"] == logs
    assert_nothing_leaked(tap.received())
    (blocked,) = await eventually(
        lambda: [r for r in load_records(gw.store) if r["kind"] == "blocked" and r["server"] == "leaky"],
        within=10,
        what="a 'blocked' record for the notification",
    )
    assert "mask" in blocked["detail"]
    deep_logs = [
        r for r in load_records(gw.store) if r["method"] == "notifications/message" and b'"child"' in r["payload"]
    ]
    assert not deep_logs, "the undeliverable notification was recorded"


async def test_too_many_candidates_fail_closed_and_the_gateway_keeps_serving(gw_choices: RunningGateway) -> None:
    async with tapped_client(gw_choices.url("leaky")) as (c, tap):
        with anyio.fail_after(30), pytest.raises(MCPError) as err:
            await c.call_tool("many_emails", {"count": 100_000})
        r = await c.call_tool("echo", {"text": "still serving"})
        assert text_of(r.content[0]) == "still serving"
        page = (await c.call_tool("customers", {})).structured_content
    assert err.value.error.code == STAGE_FAILED
    assert err.value.error.message.startswith(BLOCKED), err.value.error.message
    assert "candidate" in err.value.error.message
    assert b"user1.x@mail1.example.com" not in tap.received()
    assert page is not None and PSEUDO_EMAIL.match(page["rows"][0]["email"])  # masking goes on as configured
    rec = next(
        r
        for r in load_records(gw_choices.store)
        if r["method"] == "tools/call" and r["direction"] == "s2c" and (r["detail"] or "").startswith(BLOCKED)
    )
    assert rec["outcome"] == "failed" and b"@mail1.example.com" not in rec["payload"]
    async with tapped_client(gw_choices.url("leaky")) as (c, _tap):  # and a new session too
        assert text_of((await c.call_tool("echo", {"text": "new session"})).content[0]) == "new session"


# --- 6. portcullis mask FILE -----------------------------------------------------------------------------------------


def test_mask_cli(tmp_path: Path, gw_choices: RunningGateway) -> None:
    leaky_file = tmp_path / "leaky.env"
    leaky_file.write_text(
        f"GITHUB_TOKEN={P['github_token']}\nOWNER={P['email']}\nDATABASE_URL=postgres://app:{P['db_password']}@db/app\n"
        f"EMPLOYEE={P['employee_id']}\nREGION=eu-west-1\n"
    )
    r = portcullis("mask", str(leaky_file))
    assert r.returncode == 1, r.stderr
    assert r.stdout.splitlines() == [
        "GITHUB_TOKEN=[REDACTED:github_token]",
        "OWNER=[REDACTED:email]",
        "DATABASE_URL=postgres://app:[REDACTED:uri_credentials]@db/app",
        f"EMPLOYEE={P['employee_id']}",
        "REGION=eu-west-1",
    ]
    assert not leaked(r.stderr, SECRETS.values())  # the findings name class and place, never the secret
    assert "github_token" in r.stderr and "3 finding(s)" in r.stderr

    # a config's rules and modes apply
    r = portcullis("mask", str(leaky_file), "--config", str(gw_choices.config_path), "--json")
    assert r.returncode == 1, r.stderr
    found = {(f["class"], f["line"]) for f in json.loads(r.stdout)}
    assert found == {("github_token", 1), ("email", 2), ("uri_credentials", 3), ("employee_id", 4)}

    clean = tmp_path / "clean.txt"
    clean.write_text("version 1.2.3 built from 9fceb02d0ae598e95dc970b74767f19372d61af8\nPATH=${PATH}\n")
    r = portcullis("mask", str(clean))
    assert r.returncode == 0, r.stderr
    assert r.stdout == clean.read_text()
