"""Approval webhooks against a real local receiver: message shapes, allow-list, retries, redirects, shutdown, logs."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from aiohttp import web

from portcullis.approvals.notify import Notifier, WebhookTarget, origin, payload
from portcullis.tasks import spawn

S = 1_000_000_000
WAIT = 5.0  # the bound on every wait for something that should happen
STATUS_URL = "https://gw.example/approvals/apr_test123"
ALLOWED = {
    "id",
    "state",
    "server",
    "method",
    "target",
    "requester",
    "rule",
    "policy_version",
    "approvers",
    "required",
    "args_digest",
    "created",
    "expires",
    "decided_by",
    "reason",
}


def approval(**over: Any) -> dict[str, Any]:
    """A request as the book renders it, plus things that must never leave the gateway (each marked PLANTED)."""
    a: dict[str, Any] = {
        "id": "apr_test123",
        "state": "pending",
        "created_ns": 1_700_000_000 * S,
        "expires_ns": 1_700_003_600 * S,
        "server": "db",
        "method": "tools/call",
        "target": "drop_table",
        "args_digest": "sha256:" + "ab" * 32,
        "requester": "sub=alice",
        "requester_subject": "alice-subject-PLANTED",
        "requester_key": "https://idp|alice-key-PLANTED",
        "rule": "drops-need-approval",
        "policy_version": "v7",
        "approvers": ["dba", "sre"],
        "required": 2,
        "session_id": "session-PLANTED",
        "decided_ns": None,
        "decided_by": None,
        "reason": None,
        "released_ns": None,
        "votes": [{"voter": "sub=bob", "vote": "approve", "reason": "vote-PLANTED", "ts_ns": 1}],
        "arguments": {"table": "users", "password": "hunter2-PLANTED"},
        "token": "bearer-PLANTED",
    }
    a.update(over)
    return a


# --- the receiver ----------------------------------------------------------------------------------------------


@dataclass
class Seen:
    path_qs: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """Records every request; fails the first ``fail_first`` with ``fail_status``; can hold or hang requests."""

    base: str = ""
    seen: list[Seen] = field(default_factory=list)
    fail_first: int = 0
    fail_status: int = 500
    fail_headers: dict[str, str] = field(default_factory=dict)
    status: int = 200
    reply_headers: dict[str, str] = field(default_factory=dict)
    hang_first: int = 0  # requests that never get an answer (until the receiver stops)
    gate: asyncio.Event | None = None  # when given, every answer waits for it
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(Seen(request.path_qs, dict(request.headers), await request.read()))
        n = len(self.seen)
        self.arrived.set()
        if n <= self.hang_first:
            await self.stop.wait()
        if self.gate is not None:
            await self.gate.wait()
        if n <= self.hang_first + self.fail_first:
            return web.Response(status=self.fail_status, headers=self.fail_headers)
        return web.Response(status=self.status, headers=self.reply_headers)

    def json(self, i: int = 0) -> Any:
        return orjson.loads(self.seen[i].body)


@asynccontextmanager
async def serve() -> AsyncIterator[Receiver]:
    r = Receiver()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", r.handle)
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    r.base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield r
    finally:
        r.stop.set()
        if r.gate is not None:
            r.gate.set()
        await runner.cleanup()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with serve() as r:
        yield r


class Results:
    """on_result, as a queue the test awaits (bounded)."""

    def __init__(self) -> None:
        self.q: asyncio.Queue[tuple[str, str, bool, str]] = asyncio.Queue()

    def __call__(self, approval_id: str, target: str, delivered: bool, detail: str) -> None:
        self.q.put_nowait((approval_id, target, delivered, detail))

    async def next(self) -> tuple[str, str, bool, str]:
        return await asyncio.wait_for(self.q.get(), WAIT)


@asynccontextmanager
async def notifier(targets: list[WebhookTarget], results: Results, **kw: Any) -> AsyncIterator[Notifier]:
    kw.setdefault("backoff", 0.01)
    kw.setdefault("backoff_max", 0.05)
    n = Notifier(targets, on_result=results, **kw)
    await n.start()
    try:
        yield n
    finally:
        await n.close(grace=1.0)


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port: int = s.getsockname()[1]
    s.close()
    return port


# --- the messages ----------------------------------------------------------------------------------------------


async def test_json_message_carries_only_the_allow_list(receiver: Receiver) -> None:
    results = Results()
    url = f"{receiver.base}/hook?k=v"
    target = WebhookTarget(url, "json", {"Authorization": "Bearer operator-token"})
    async with notifier([target], results) as n:
        n.notify("requested", approval(), STATUS_URL)
        assert await results.next() == ("apr_test123", receiver.base, True, "HTTP 200 after 1 attempt")
    [seen] = receiver.seen
    assert seen.path_qs == "/hook?k=v"
    assert seen.headers["Content-Type"] == "application/json"
    assert seen.headers["Authorization"] == "Bearer operator-token"
    assert b"PLANTED" not in seen.body and b"hunter2" not in seen.body
    msg = receiver.json()
    assert set(msg) == {"event", "approval", "url"}
    assert msg["event"] == "requested" and msg["url"] == STATUS_URL
    assert set(msg["approval"]) == ALLOWED
    assert msg["approval"] == {
        "id": "apr_test123",
        "state": "pending",
        "server": "db",
        "method": "tools/call",
        "target": "drop_table",
        "requester": "sub=alice",
        "rule": "drops-need-approval",
        "policy_version": "v7",
        "approvers": ["dba", "sre"],
        "required": 2,
        "args_digest": "sha256:" + "ab" * 32,
        "created": "2023-11-14T22:13:20Z",
        "expires": "2023-11-14T23:13:20Z",
        "decided_by": None,
        "reason": None,
    }
    assert msg == payload("requested", approval(), STATUS_URL, "json")


def _check_slack_blocks(msg: dict[str, Any]) -> None:
    """The subset of Block Kit used: section blocks with a mrkdwn text and/or up to 10 mrkdwn fields."""
    assert isinstance(msg["text"], str) and 0 < len(msg["text"]) <= 3000
    assert isinstance(msg["blocks"], list) and 0 < len(msg["blocks"]) <= 50
    for block in msg["blocks"]:
        assert block["type"] == "section"
        assert set(block) <= {"type", "text", "fields"} and ("text" in block or "fields" in block)
        if "text" in block:
            assert block["text"]["type"] == "mrkdwn" and 0 < len(block["text"]["text"]) <= 3000
        if "fields" in block:
            assert 0 < len(block["fields"]) <= 10
            for f in block["fields"]:
                assert set(f) == {"type", "text"} and f["type"] == "mrkdwn" and 0 < len(f["text"]) <= 2000


async def test_slack_message_shape(receiver: Receiver) -> None:
    results = Results()
    async with notifier([WebhookTarget(f"{receiver.base}/services/T0/B0/x", "slack")], results) as n:
        decided = approval(state="approved", decided_by="sub=bob", reason="change ticket CHG-1")
        n.notify("approved", decided, STATUS_URL)
        assert (await results.next())[2] is True
    assert b"PLANTED" not in receiver.seen[0].body and b"hunter2" not in receiver.seen[0].body
    msg = receiver.json()
    assert set(msg) == {"text", "blocks"}
    assert f"<{STATUS_URL}|apr_test123>" in msg["text"]
    assert "approved" in msg["text"] and "sub=bob" in msg["text"]
    _check_slack_blocks(msg)
    everything = orjson.dumps(msg).decode()
    for shown in ("drop_table", "sha256:" + "ab" * 32, "dba, sre", "CHG-1", "2023-11-14T23:13:20Z"):
        assert shown in everything


def test_slack_escapes_values_so_they_cannot_link_or_mention() -> None:
    msg = payload("requested", approval(target="<!channel> & <https://evil.example|click>"), STATUS_URL, "slack")
    _check_slack_blocks(msg)
    everything = orjson.dumps(msg).decode()
    assert "<!channel>" not in everything and "<https://evil" not in everything
    assert "&lt;!channel&gt; &amp; &lt;https://evil.example|click&gt;" in msg["text"]
    assert f"<{STATUS_URL}|apr_test123>" in msg["text"]


def test_unknown_event_or_format_is_refused() -> None:
    with pytest.raises(ValueError):
        payload("launched", approval(), STATUS_URL, "json")
    with pytest.raises(ValueError):
        payload("requested", approval(), STATUS_URL, "teams")


def test_targets_are_validated_and_named_by_origin_only() -> None:
    t = WebhookTarget("https://hooks.slack.com/services/T0/B0/SECRET?x=1", "slack", {"X-Key": "k"})
    assert t.origin == "https://hooks.slack.com:443"
    assert "SECRET" not in repr(t) and "X-Key" not in repr(t)
    assert origin("http://user:pw@[::1]:8080/p?q") == "http://[::1]:8080"
    for url, fmt in (("ftp://h/x", "json"), ("/relative", "json"), ("https://h/x", "xml")):
        with pytest.raises(ValueError):
            WebhookTarget(url, fmt)


# --- delivery --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 503, 408, 429])
async def test_retries_until_delivered(receiver: Receiver, status: int) -> None:
    receiver.fail_first, receiver.fail_status = 2, status
    results = Results()
    async with notifier([WebhookTarget(f"{receiver.base}/hook", "json")], results) as n:
        n.notify("requested", approval(), STATUS_URL)
        assert await results.next() == ("apr_test123", receiver.base, True, "HTTP 200 after 3 attempts")
    assert len(receiver.seen) == 3
    assert len({s.body for s in receiver.seen}) == 1  # the same message every time


async def test_retry_after_is_honoured(receiver: Receiver) -> None:
    # a backoff of a minute would time the wait out: the receiver's Retry-After: 0 is what lets it through
    receiver.fail_first, receiver.fail_status, receiver.fail_headers = 1, 429, {"Retry-After": "0"}
    results = Results()
    target = WebhookTarget(f"{receiver.base}/hook", "json")
    async with notifier([target], results, backoff=60.0, backoff_max=120.0) as n:
        n.notify("requested", approval(), STATUS_URL)
        assert (await results.next())[2:] == (True, "HTTP 200 after 2 attempts")


async def test_retry_after_is_capped_at_backoff_max(receiver: Receiver) -> None:
    receiver.fail_first, receiver.fail_status, receiver.fail_headers = 1, 503, {"Retry-After": "3600"}
    results = Results()
    async with notifier([WebhookTarget(f"{receiver.base}/hook", "json")], results, backoff_max=0.01) as n:
        n.notify("requested", approval(), STATUS_URL)
        assert (await results.next())[2:] == (True, "HTTP 200 after 2 attempts")


async def test_gives_up_after_attempts(receiver: Receiver) -> None:
    receiver.fail_first = 100
    results = Results()
    async with notifier([WebhookTarget(f"{receiver.base}/hook", "json")], results, attempts=3) as n:
        n.notify("expired", approval(state="expired"), STATUS_URL)
        assert await results.next() == ("apr_test123", receiver.base, False, "HTTP 500 \N{MULTIPLICATION SIGN}3")
    assert len(receiver.seen) == 3


async def test_a_timeout_is_retried(receiver: Receiver) -> None:
    receiver.hang_first = 1
    results = Results()
    async with notifier([WebhookTarget(f"{receiver.base}/hook", "json")], results, timeout=0.2) as n:
        n.notify("requested", approval(), STATUS_URL)
        assert (await results.next())[2:] == (True, "HTTP 200 after 2 attempts")
    assert len(receiver.seen) == 2


@pytest.mark.parametrize("status", [400, 401, 404, 410])
async def test_other_4xx_is_not_retried(receiver: Receiver, status: int) -> None:
    receiver.status = status
    results = Results()
    async with notifier([WebhookTarget(f"{receiver.base}/hook", "json")], results) as n:
        n.notify("denied", approval(state="denied"), STATUS_URL)
        _, _, delivered, detail = await results.next()
    assert not delivered and detail == f"HTTP {status} \N{MULTIPLICATION SIGN}1, not retried"
    assert len(receiver.seen) == 1


async def test_a_redirect_is_not_followed(receiver: Receiver) -> None:
    async with serve() as elsewhere:
        receiver.status, receiver.reply_headers = 302, {"Location": f"{elsewhere.base}/stolen"}
        results = Results()
        async with notifier([WebhookTarget(f"{receiver.base}/hook", "json")], results) as n:
            n.notify("requested", approval(), STATUS_URL)
            _, _, delivered, detail = await results.next()
        assert not delivered and detail == "HTTP 302 \N{MULTIPLICATION SIGN}1, redirect not followed"
        assert len(receiver.seen) == 1
        assert elsewhere.seen == []


async def test_every_target_gets_its_own_format(receiver: Receiver) -> None:
    results = Results()
    targets = [WebhookTarget(f"{receiver.base}/j", "json"), WebhookTarget(f"{receiver.base}/s", "slack")]
    async with notifier(targets, results) as n:
        n.notify("released", approval(state="released"), STATUS_URL)
        assert [(await results.next())[2] for _ in targets] == [True, True]
    by_path = {s.path_qs: orjson.loads(s.body) for s in receiver.seen}
    assert by_path["/j"]["event"] == "released" and "blocks" in by_path["/s"]


# --- never blocking, never raising -----------------------------------------------------------------------------


async def test_notify_returns_at_once_and_an_unreachable_target_is_reported() -> None:
    base = f"http://127.0.0.1:{closed_port()}"
    results = Results()
    async with notifier([WebhookTarget(f"{base}/hook", "json")], results, attempts=2) as n:
        t0 = time.perf_counter()
        assert n.notify("requested", approval(), STATUS_URL) is None  # type: ignore[func-returns-value]
        assert time.perf_counter() - t0 < 0.05
        assert await results.next() == ("apr_test123", base, False, "connection refused \N{MULTIPLICATION SIGN}2")


async def test_notify_never_raises(receiver: Receiver) -> None:
    results = Results()
    target = WebhookTarget(f"{receiver.base}/hook", "json")
    n = Notifier([target], on_result=results)
    n.notify("requested", approval(), STATUS_URL)  # not started yet
    assert (await results.next())[2:] == (False, "dropped: notifier not running")
    await n.start()
    n.notify("launched", approval(), STATUS_URL)  # an unknown event
    assert (await results.next())[2:] == (False, "message not built")
    n.notify("requested", approval(created_ns=object()), STATUS_URL)  # an odd value: left out, still sent
    assert (await results.next())[2] is True
    n.notify("requested", None, STATUS_URL)  # type: ignore[arg-type]
    await n.close()
    n.notify("requested", approval(), STATUS_URL)  # closed
    assert (await results.next())[2:] == (False, "dropped: notifier not running")
    assert results.q.empty()
    assert len(receiver.seen) == 1 and receiver.json()["approval"]["created"] is None


async def test_a_failing_result_callback_does_not_break_delivery(receiver: Receiver) -> None:
    done = asyncio.Event()

    def on_result(*_: object) -> None:
        done.set()
        raise RuntimeError("callback bug")

    n = Notifier([WebhookTarget(f"{receiver.base}/hook", "json")], on_result=on_result)
    await n.start()
    n.notify("requested", approval(), STATUS_URL)
    await asyncio.wait_for(done.wait(), WAIT)
    await n.close()
    assert n.pending == 0


async def test_notify_from_another_thread(receiver: Receiver) -> None:
    results = Results()
    async with notifier([WebhookTarget(f"{receiver.base}/hook", "json")], results) as n:
        await asyncio.to_thread(n.notify, "requested", approval(), STATUS_URL)
        assert (await results.next())[2] is True


async def test_the_queue_is_bounded(receiver: Receiver) -> None:
    receiver.gate = asyncio.Event()
    results = Results()
    async with notifier([WebhookTarget(f"{receiver.base}/hook", "json")], results, max_pending=2) as n:
        for i in range(3):
            n.notify("requested", approval(id=f"apr_{i}"), STATUS_URL)
        assert await results.next() == ("apr_2", receiver.base, False, "dropped: 2 deliveries pending")
        assert n.pending == 2
        receiver.gate.set()
        assert sorted([(await results.next())[:3] for _ in range(2)]) == [
            ("apr_0", receiver.base, True),
            ("apr_1", receiver.base, True),
        ]


# --- shutdown --------------------------------------------------------------------------------------------------


async def test_close_waits_for_deliveries_in_flight(receiver: Receiver) -> None:
    receiver.gate = asyncio.Event()
    results = Results()
    n = Notifier([WebhookTarget(f"{receiver.base}/hook", "json")], on_result=results)
    await n.start()
    n.notify("requested", approval(), STATUS_URL)
    await asyncio.wait_for(receiver.arrived.wait(), WAIT)
    closing = spawn(n.close(grace=WAIT))
    done, _ = await asyncio.wait({closing}, timeout=0.05)
    assert not done  # still waiting for the delivery
    receiver.gate.set()
    await asyncio.wait_for(closing, WAIT)
    assert results.q.get_nowait()[2:] == (True, "HTTP 200 after 1 attempt")
    assert n.pending == 0


async def test_close_gives_up_after_the_grace(receiver: Receiver) -> None:
    receiver.hang_first = 100
    results = Results()
    n = Notifier([WebhookTarget(f"{receiver.base}/hook", "json")], on_result=results, timeout=60.0)
    await n.start()
    n.notify("requested", approval(), STATUS_URL)
    await asyncio.wait_for(receiver.arrived.wait(), WAIT)
    t0 = time.perf_counter()
    await asyncio.wait_for(n.close(grace=0.1), WAIT)
    assert time.perf_counter() - t0 < 1.0
    assert results.q.get_nowait()[2:] == (False, "cancelled at shutdown after 1 attempt(s)")
    assert n.pending == 0


# --- logs ------------------------------------------------------------------------------------------------------


async def test_logs_name_the_request_and_host_never_the_url_or_message(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="portcullis.approvals")
    receiver.fail_first = 1
    secret_path = "/services/T0/B0/PATHSECRET?token=QUERYSECRET"
    unreachable = f"http://127.0.0.1:{closed_port()}"
    targets = [
        WebhookTarget(f"{receiver.base}{secret_path}", "slack", {"Authorization": "Bearer HEADERSECRET"}),
        WebhookTarget(f"{unreachable}{secret_path}", "json"),
    ]
    results = Results()
    async with notifier(targets, results, attempts=2) as n:
        n.notify("requested", approval(), STATUS_URL)
        got = {(await results.next())[1:3] for _ in targets}
    assert got == {(receiver.base, True), (unreachable, False)}
    assert receiver.seen[-1].path_qs == secret_path  # delivered to the full URL
    text = caplog.text
    assert "apr_test123" in text and "127.0.0.1" in text
    assert "retry in" in text and "not delivered" in text and "delivered to" in text
    for secret in ("PATHSECRET", "QUERYSECRET", "HEADERSECRET", "/services/", "PLANTED", "drop_table", STATUS_URL):
        assert secret not in text
