"""The README's first command in miniature: the demo config, its dev issuer and the bundled demo server work."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import httpx2
from mcp.client import Client
from mcp.client.streamable_http import streamable_http_client
from ruamel.yaml import YAML

from tests.support.gateway import start_gateway

REPO = Path(__file__).resolve().parents[2]


def cli(*args: str) -> str:
    return subprocess.run(
        [sys.executable, "-m", "portcullis", *args], capture_output=True, text=True, timeout=30, check=True
    ).stdout


async def test_demo_config_serves_the_demo_server_to_a_dev_token(tmp_path: Path) -> None:
    config, store = _demo_config(tmp_path)
    gw = start_gateway(config, store)
    try:
        args = ("token", "--config", str(config), "--url", gw.base, "--user", "alice", "--groups", "eng,oncall")
        token = (await asyncio.to_thread(cli, *args)).strip()
        async with (
            httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=20) as http,
            Client(streamable_http_client(gw.url("demo"), http_client=http), mode="legacy") as c,
        ):
            names = {t.name for t in (await c.list_tools()).tools}
            assert {"echo", "query_customers", "drop_table"} <= names
            r = await c.call_tool("echo", {"text": "hello through Portcullis"})
            assert r.content[0].text == "hello through Portcullis"  # type: ignore[union-attr]
        listing = await asyncio.to_thread(cli, "sessions", "list", "--config", str(config))
        assert "demo" in listing and "2025-11-25" in listing
    finally:
        gw.proc.stop(timeout=10)


async def test_the_demo_console_signs_in_through_the_development_issuer_and_approves_a_held_drop(
    tmp_path: Path,
) -> None:
    """What the README's "Try it" promises: sign in to the console as bob (oncall) with the development issuer, see
    alice's held ``drop_table`` arrive while her call waits, approve it, and her call completes."""
    from playwright.async_api import expect

    from portcullis.tasks import spawn
    from tests.support.browser import chromium, screenshot_path

    config, store = _demo_config(tmp_path)
    gw = start_gateway(config, store)
    try:
        args = ("token", "--config", str(config), "--url", gw.base, "--user", "alice", "--groups", "eng,oncall")
        token = (await asyncio.to_thread(cli, *args)).strip()
        async with chromium() as browser:
            ctx = await browser.new_context(viewport={"width": 390, "height": 844})  # a phone
            ctx.set_default_timeout(20_000)
            page = await ctx.new_page()
            await page.goto(gw.base + "/ui/")
            await page.get_by_role("link", name="Sign in with your identity provider").click()
            await expect(page.get_by_role("heading", name="Development sign-in")).to_be_visible()
            await page.get_by_label("User").fill("bob")
            await page.get_by_label("Groups (comma-separated)").fill("oncall")
            await page.get_by_role("button", name="Sign in").click()
            await expect(page.locator("#inbox-empty")).to_be_visible()
            await expect(page.locator("#who")).to_contain_text("bob")

            async with (
                httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=60) as http,
                Client(streamable_http_client(gw.url("demo"), http_client=http), mode="legacy") as c,
            ):
                waiting = spawn(c.call_tool("drop_table", {"table": "customers"}))
                try:
                    card = page.locator("article.approval")
                    await expect(card).to_contain_text("drop_table")
                    await expect(card.locator(".requester")).to_have_text("alice")
                    await page.screenshot(path=screenshot_path("demo-inbox-phone"), full_page=True)
                    await card.get_by_role("button", name="Approve").click()
                    result = await asyncio.wait_for(waiting, 30)
                finally:
                    waiting.cancel()
            assert not result.is_error and "customers" in result.content[0].text  # type: ignore[union-attr]
            await ctx.close()
        # the development issuer's sign-in page refuses any redirect but the console's own
        async with httpx2.AsyncClient(timeout=10) as http:
            r = await http.get(
                gw.base + "/dev-issuer/authorize",
                params={"client_id": "portcullis-console", "redirect_uri": "http://evil.example/cb",
                        "response_type": "code", "state": "s", "code_challenge": "c", "code_challenge_method": "S256"},
            )  # fmt: skip
            assert r.status_code == 400 and "only the gateway's own console" in r.text
    finally:
        gw.proc.stop(timeout=10)


def _demo_config(tmp_path: Path) -> tuple[Path, str]:
    yaml = YAML()
    cfg = yaml.load((REPO / "examples" / "demo.yaml").read_text())
    cfg["listen"] = "127.0.0.1:0"
    cfg["store"] = f"sqlite:///{tmp_path / 'demo.db'}"
    cfg["auth"]["dev_issuer"]["key_file"] = str(tmp_path / "dev.jwk")
    cfg["servers"]["demo"]["command"] = [sys.executable, "-m", "portcullis.demo.server"]
    cfg["policy"]["file"] = str(REPO / "examples" / "demo-policy.yaml")
    config = tmp_path / "demo.yaml"
    with config.open("w") as f:
        yaml.dump(cfg, f)
    return config, cfg["store"]
