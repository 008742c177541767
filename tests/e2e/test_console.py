"""The web console in a real headless Chromium (Debian's package, driven by Playwright), logging in through the real
OpenID provider (authorization code + PKCE, the gateway as the client), in front of a real gateway and the bundled
demo MCP server.

Users (tests/node/oidc_provider.mjs): alice (eng, oncall) is held on ``echo`` when it is about a refund, and asks;
bob (eng) approves; carol (auditors) reads sessions and the trail but decides nothing; dave (no groups) has no role.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import AsyncIterator, Iterator
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import aiohttp
import pytest
from playwright.async_api import Browser, BrowserContext, Page, expect

from portcullis.tasks import spawn
from tests.support.browser import chromium, screenshot_path
from tests.support.gateway import REPO_ROOT, RunningGateway, demo_stdio, start_gateway, write_config
from tests.support.oidc import OidcProvider
from tests.support.raw import McpSession
from tests.support.records import load_records
from tests.support.waiting import eventually_async

pytestmark = [pytest.mark.e2e, pytest.mark.node]

CARD = "4111 1111 1111 1111"
EMAIL = "ada@example.com"
POLICY = """\
version: 1
default: deny
rules:
  - id: lists
    allow: {methods: [tools/list]}
  - id: reads
    allow: {tools: [query_customers, current_time, echo]}
  - id: refunds-need-approval
    hold: {groups: [oncall], tools: [echo], approvers: [eng], when: "arguments.text.contains('refund')"}
"""
UI_TIMEOUT_MS = 20_000


@pytest.fixture(scope="module")
def gateway(op: OidcProvider, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    tmp = tmp_path_factory.mktemp("console")
    client = op.register_client("http://127.0.0.1/ui/callback", application_type="native")  # any loopback port
    (tmp / "policy.yaml").write_text(POLICY)
    path, store = write_config(
        tmp,
        {"demo": demo_stdio()},
        auth={"mode": "oidc", "issuers": [{"issuer": op.issuer}]},
        policy={"file": str(tmp / "policy.yaml")},
        approvals={"wait": 60},
        admin={"auditor_groups": ["auditors"], "console": {"client_id": client.client_id}},
    )
    gw = start_gateway(path, store)
    try:
        yield gw
    finally:
        gw.proc.stop(timeout=10)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as b:
        yield b


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=90)) as s:
        yield s


async def mcp(http: aiohttp.ClientSession, gw: RunningGateway, op: OidcProvider, user: str) -> McpSession:
    return await McpSession(http, gw.url("demo"), await op.aio.user_token(user, gw.url("demo")), "console").open()


async def login(browser: Browser, gw: RunningGateway, user: str, width: int = 1280) -> tuple[BrowserContext, Page]:
    """Sign in through the console's button and the provider's own login form, as a person would."""
    ctx = await browser.new_context(viewport={"width": width, "height": 900})
    ctx.set_default_timeout(UI_TIMEOUT_MS)
    page = await ctx.new_page()
    await page.goto(gw.base + "/ui/")
    await page.get_by_role("link", name="Sign in with your identity provider").click()
    await page.select_option("select[name=user]", user)  # the provider's page (tests/node/oidc_provider.mjs)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(gw.base + "/ui/**")
    await expect(page.locator("#signout")).to_be_visible()
    return ctx, page


async def pending_for(http: aiohttp.ClientSession, gw: RunningGateway, op: OidcProvider, text: str) -> dict[str, Any]:
    """The pending request whose arguments carry ``text`` (bob's view over the API), once it exists."""
    token = await op.aio.user_token("bob", gw.base)

    async def look() -> dict[str, Any] | None:
        async with http.get(
            f"{gw.base}/admin/api/approvals", params={"state": "pending"}, headers={"Authorization": f"Bearer {token}"}
        ) as r:
            rows = (await r.json())["approvals"]
        return next((a for a in rows if text in json.dumps(a["arguments"])), None)

    async def found() -> bool:
        return await look() is not None

    await eventually_async(found, 20, "the held call's approval request")
    got = await look()
    assert got is not None
    return got


def records_of(gw: RunningGateway, kind: str) -> list[dict[str, Any]]:
    return [r for r in load_records(gw.store) if r["kind"] == kind]


async def test_an_approver_sees_a_held_call_live_and_approving_it_completes_the_waiting_call(
    gateway: RunningGateway, op: OidcProvider, browser: Browser, http: aiohttp.ClientSession
) -> None:
    ctx, page = await login(browser, gateway, "bob")
    csp_errors: list[str] = []
    page.on("console", lambda m: csp_errors.append(m.text) if "Content Security Policy" in m.text else None)
    await expect(page.locator("#inbox-empty")).to_be_visible()

    alice = await mcp(http, gateway, op, "alice")
    text = f"refund {CARD} to {EMAIL} (order 7001)"
    waiting = spawn(alice.call_tool("echo", {"text": text}, **{"Portcullis-Justification": "customer refund CHG-7"}))
    try:
        card = page.locator("article.approval")
        await expect(card).to_have_count(1)  # arrives over the live stream: nobody reloads the page
        await expect(card.locator(".requester")).to_have_text("alice")
        await expect(card.locator(".justification")).to_have_text("customer refund CHG-7")
        await expect(card).to_contain_text("refunds-need-approval")
        args = card.locator("pre")
        await expect(args.locator("mark.masked").first).to_be_visible()
        assert CARD not in await args.inner_text() and EMAIL not in await args.inner_text()
        assert await page.locator("#pending-count").inner_text() == "1"
        assert not waiting.done()  # alice is still waiting for the decision
        await page.screenshot(path=screenshot_path("inbox"), full_page=True)

        await card.get_by_label("Reason (recorded with your decision)").fill("refund approved, ticket CHG-7")
        await card.get_by_role("button", name="Approve").click()
        answer = await asyncio.wait_for(waiting, 30)
    finally:
        waiting.cancel()
    assert "result" in answer and not answer["result"].get("isError"), answer
    assert CARD not in json.dumps(answer)  # the echoed refund comes back masked
    await expect(page.locator("article.approval")).to_have_count(0)
    await expect(page.locator("table tbody")).to_contain_text("approved")
    await page.screenshot(path=screenshot_path("inbox-decided"), full_page=True)
    assert csp_errors == []  # the console runs under its own strict CSP without a single violation

    approved = records_of(gateway, "approval_approved")
    assert approved and "via the console" in approved[-1]["detail"] and "ticket CHG-7" in approved[-1]["detail"]
    access = [r["detail"] for r in records_of(gateway, "admin_access")]
    assert any(d.startswith("POST /admin/api/approvals/apr_") and "-> 200" in d and "(console)" in d for d in access)
    assert any(d.startswith("GET /ui/callback?") and "-> 303" in d for d in access)  # the login itself
    assert records_of(gateway, "console_login")
    await ctx.close()


async def test_without_approver_rights_nobody_approves_neither_in_the_ui_nor_through_the_api(
    gateway: RunningGateway, op: OidcProvider, browser: Browser, http: aiohttp.ClientSession
) -> None:
    alice = await mcp(http, gateway, op, "alice")
    waiting = spawn(alice.call_tool("echo", {"text": "refund order 7002"}))
    try:
        req = await pending_for(http, gateway, op, "order 7002")

        ctx, page = await login(browser, gateway, "carol")  # an auditor: reads everything, decides nothing
        await expect(page.locator("#inbox-empty")).to_be_visible()  # the request is not hers to see or decide
        status, body = await page.evaluate(
            """async ([id, csrf]) => {
                const me = await (await fetch('/admin/api/me')).json();
                const r = await fetch(`/admin/api/approvals/${id}/approve`, {method: 'POST',
                    headers: {'Content-Type': 'application/json', 'X-CSRF-Token': me.csrf_token}, body: '{}'});
                return [r.status, await r.json()];
            }""",
            [req["id"], None],
        )
        assert status == 404 and body["error"] == "not_found", body  # not hers: as if it did not exist
        await ctx.close()

        ctx, page = await login(browser, gateway, "alice")  # the requester sees her request, and cannot decide it
        card = page.locator(f"article.approval[data-id='{req['id']}']")
        await expect(card).to_contain_text("someone else must decide it")
        await expect(card.get_by_role("button", name="Approve")).to_have_count(0)
        await ctx.close()

        dave = await op.aio.user_token("dave", gateway.base)
        async with http.post(
            f"{gateway.base}/admin/api/approvals/{req['id']}/approve", headers={"Authorization": f"Bearer {dave}"}
        ) as r:
            assert r.status == 404 and (await r.json())["error"] == "not_found"
        bob = await op.aio.user_token("bob", gateway.base)
        async with http.get(
            f"{gateway.base}/admin/api/approvals/{req['id']}", headers={"Authorization": f"Bearer {bob}"}
        ) as r:
            assert (await r.json())["state"] == "pending"  # nothing anyone without the right did took effect
        assert not waiting.done()
    finally:
        waiting.cancel()


async def test_the_session_page_replays_the_recorded_exchange_with_masked_values_marked(
    gateway: RunningGateway, op: OidcProvider, browser: Browser, http: aiohttp.ClientSession
) -> None:
    alice = await mcp(http, gateway, op, "alice")
    answer = await alice.call_tool("query_customers", {"limit": 2})
    assert "result" in answer and EMAIL not in json.dumps(answer)  # masked on the way to alice already
    said = await alice.call_tool("echo", {"text": f"my card is {CARD}"})  # recorded as sent; shown masked
    assert "result" in said and CARD not in json.dumps(said)
    sid = alice.sid
    assert sid is not None

    ctx, page = await login(browser, gateway, "carol")
    await page.get_by_role("link", name="Sessions").click()
    await page.get_by_label("Principal (subject)").fill("alice")
    await page.get_by_role("button", name="Search").click()
    await expect(page.locator("#sessions-table")).to_contain_text(sid)
    await page.screenshot(path=screenshot_path("sessions"), full_page=True)
    await page.get_by_role("link", name=sid).click()
    timeline = page.locator("#timeline")
    await expect(timeline.locator("li.record").first).to_be_visible()
    await expect(timeline).to_contain_text("tools/call")
    await expect(timeline).to_contain_text("query_customers")
    await expect(timeline.locator("mark.masked").first).to_be_visible()  # masked values are marked as such
    await expect(timeline.locator(".masked-note").first).to_be_visible()
    shown = await timeline.inner_text()
    assert EMAIL not in shown and CARD not in shown  # the page shows what was recorded: masked, never the original
    assert "allow" in shown  # the decision of each call
    await page.screenshot(path=screenshot_path("session"), full_page=True)

    await page.get_by_role("link", name="Audit").click()
    await page.get_by_label("Principal").fill("alice")
    await page.get_by_label("Tool").fill("query_customers")
    await page.get_by_role("button", name="Search").click()
    await expect(page.locator("#audit-table")).to_contain_text("query_customers")
    await page.screenshot(path=screenshot_path("audit"), full_page=True)

    await page.get_by_role("link", name="Permissions").click()
    await page.get_by_label("Subject (empty: yourself)").fill("alice")
    await page.get_by_label("Groups").fill("eng,oncall")
    await page.get_by_role("button", name="Search").click()
    section = page.locator("section.card", has_text="demo")
    await expect(section).to_contain_text("tool echo")
    await expect(section.locator("tr", has_text="tool echo")).to_contain_text(
        "depends on the arguments (rules refunds-need-approval)"
    )
    await expect(section.locator("tr", has_text="tool query_customers")).to_contain_text("allow")
    await expect(section.locator("tr", has_text="(any other tool)")).to_contain_text("deny")
    await page.screenshot(path=screenshot_path("permissions"), full_page=True)
    await ctx.close()

    ctx, page = await login(browser, gateway, "bob", width=390)  # a phone-sized screen
    await page.screenshot(path=screenshot_path("inbox-phone"), full_page=True)
    assert await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")  # nothing overflows
    await ctx.close()


class _Scripts(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.inline: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = {k for k, _ in attrs}
        if tag == "script" and "src" not in names:
            self.inline.append("inline <script>")
        if tag == "style" or "style" in names:
            self.inline.append(f"inline style on <{tag}>")
        self.inline += [f"event handler {k} on <{tag}>" for k in names if k.startswith("on")]


@contextlib.contextmanager
def evil_site(target: str) -> Iterator[str]:
    """Another origin on loopback whose page posts a form to the gateway (a cross-site request forgery)."""
    page = f"""<!doctype html><form id="f" method="post" action="{target}" enctype="text/plain">
<input name='{{"reason":"csrf","x":"' value='"}}'></form><script>document.getElementById('f').submit()</script>"""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(page.encode())

        def log_message(self, *_args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


async def test_cookie_flags_csp_and_csrf_protection(
    gateway: RunningGateway, op: OidcProvider, browser: Browser, http: aiohttp.ClientSession
) -> None:
    async with http.get(gateway.base + "/ui/") as r:
        html = await r.text()
        headers = r.headers
    csp = headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert headers["X-Frame-Options"] == "DENY" and headers["X-Content-Type-Options"] == "nosniff"
    parser = _Scripts()
    parser.feed(html)
    assert parser.inline == []  # nothing the CSP would have to allow
    for name in ("console.js", "console.css"):
        async with http.get(f"{gateway.base}/ui/static/{name}") as r:
            assert r.status == 200 and "Content-Security-Policy" in r.headers

    ctx, page = await login(browser, gateway, "bob")
    cookie = next(c for c in await ctx.cookies() if c["name"] == "__Host-portcullis-console")
    assert cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/"
    assert "portcullis-console" not in await page.evaluate("document.cookie")  # no script can read it
    assert not [c for c in await ctx.cookies() if c["name"] == "__Host-portcullis-login"]  # the login state is gone

    alice = await mcp(http, gateway, op, "alice")
    waiting = spawn(alice.call_tool("echo", {"text": "refund order 7003"}))
    try:
        req = await pending_for(http, gateway, op, "order 7003")
        deny = f"/admin/api/approvals/{req['id']}/deny"
        attempts = await page.evaluate(
            """async (url) => {
                const post = async (headers) => (await fetch(url, {method: 'POST', body: '{}',
                    headers: {'Content-Type': 'application/json', ...headers}})).status;
                return [await post({}), await post({'X-CSRF-Token': 'guessed'})];
            }""",
            deny,
        )
        assert attempts == [403, 403]  # the cookie alone never changes anything

        with evil_site(gateway.base + deny) as evil:
            forged = await ctx.new_page()
            async with forged.expect_response(lambda r: r.url.endswith(deny)) as got:
                await forged.goto(evil)
            assert (await got.value).status == 403  # the browser sent the cookie; the token was missing
            await forged.close()

        cookie_header = {"Cookie": f"__Host-portcullis-console={cookie['value']}"}
        me = await page.evaluate("fetch('/admin/api/me').then(r => r.json())")
        async with http.post(
            gateway.base + deny,
            json={},
            headers={**cookie_header, "X-CSRF-Token": me["csrf_token"], "Origin": "http://evil.example"},
        ) as r:
            assert r.status == 403 and "cross-origin" in (await r.json())["message"]
        bob = await op.aio.user_token("bob", gateway.base)
        async with http.get(
            f"{gateway.base}/admin/api/approvals/{req['id']}", headers={"Authorization": f"Bearer {bob}"}
        ) as r:
            assert (await r.json())["state"] == "pending"  # none of the forgeries decided anything

        refused = [d for d in (r["detail"] for r in records_of(gateway, "admin_access")) if deny in d]
        assert sum("CSRF token missing or wrong" in d for d in refused) >= 3 and any(
            "cross-origin" in d for d in refused
        )

        # signing out ends the session everywhere: the old cookie no longer opens the API
        await page.get_by_role("button", name="Sign out").click()
        await expect(page.get_by_role("link", name="Sign in with your identity provider")).to_be_visible()
        async with http.get(gateway.base + "/admin/api/me", headers=cookie_header) as r:
            assert r.status == 401 and (await r.json())["error"] == "unauthorized"
        assert records_of(gateway, "console_logout")
    finally:
        waiting.cancel()
    await ctx.close()


async def test_a_login_that_was_not_started_here_is_refused(
    gateway: RunningGateway, http: aiohttp.ClientSession
) -> None:
    async with http.get(gateway.base + "/ui/callback", params={"code": "stolen", "state": "forged"}) as r:
        assert r.status == 400 and "not started here" in await r.text()
    async with http.get(gateway.base + "/ui/login", allow_redirects=False) as r:
        assert r.status == 303
        location = r.headers["Location"]
        assert "code_challenge_method=S256" in location and "code_challenge=" in location
        assert "resource=" in location and "state=" in location
        set_cookie = r.headers["Set-Cookie"]
        assert "__Host-portcullis-login=" in set_cookie and "HttpOnly" in set_cookie and "Secure" in set_cookie


AXE = REPO_ROOT / "node_modules" / "axe-core" / "axe.min.js"


async def axe_violations(page: Page) -> list[str]:
    """axe-core's WCAG 2.1 A/AA rules (labels, names, landmarks, contrast, ...) on the page as it is now."""
    if not await page.evaluate("typeof axe !== 'undefined'"):
        await page.evaluate(AXE.read_text())  # evaluated over CDP: the page's own CSP stays as it is
    found = await page.evaluate(
        "axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']}})"
        ".then(r => r.violations.map(v => `${v.id}: ${v.nodes.map(n => n.target.join(' ')).join(', ')}`))"
    )
    return list(found)


async def test_every_page_passes_axe_and_an_approval_can_be_made_from_the_keyboard(
    gateway: RunningGateway, op: OidcProvider, browser: Browser, http: aiohttp.ClientSession
) -> None:
    alice = await mcp(http, gateway, op, "alice")
    waiting = spawn(alice.call_tool("echo", {"text": "refund order 7004"}))
    try:
        await pending_for(http, gateway, op, "order 7004")
        ctx, page = await login(browser, gateway, "bob")
        card = page.locator("article.approval", has_text="order 7004")
        await expect(card).to_be_visible()
        assert await axe_violations(page) == []
        auditor_ctx, auditor = await login(browser, gateway, "carol")
        for view, ready in (
            ("sessions", "#sessions-table"),
            ("audit", "#audit-table"),
            ("permissions", "section.card"),
            ("agents", "#servers-table"),
        ):
            await auditor.goto(f"{gateway.base}/ui/#/{view}")
            await expect(auditor.locator(ready).first).to_be_visible()
            assert await axe_violations(auditor) == [], view
        await auditor_ctx.close()

        # the keyboard alone: skip link, the reason, Tab to Approve, Enter
        await page.goto(f"{gateway.base}/ui/#/inbox")
        await page.reload()
        await expect(card).to_be_visible()
        await page.keyboard.press("Tab")
        assert await page.evaluate("document.activeElement.textContent") == "Skip to content"
        reason = card.get_by_label("Reason (recorded with your decision)")
        await reason.focus()
        await page.keyboard.type("approved from the keyboard")
        # another request arriving meanwhile re-renders the live inbox: the half-typed reason and the focus stay
        other = spawn(alice.call_tool("echo", {"text": "refund order 7005"}))
        try:
            await expect(page.locator("article.approval", has_text="order 7005")).to_be_visible()
            await expect(reason).to_have_value("approved from the keyboard")
            await expect(reason).to_be_focused()
        finally:
            other.cancel()
        await page.keyboard.press("Tab")
        assert await page.evaluate("document.activeElement.textContent") == "Approve"
        await page.keyboard.press("Enter")
        answer = await asyncio.wait_for(waiting, 30)
        assert "result" in answer, answer
        await ctx.close()
    finally:
        waiting.cancel()
