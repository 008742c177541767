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
    yaml = YAML()
    cfg = yaml.load((REPO / "examples" / "demo.yaml").read_text())
    cfg["listen"] = "127.0.0.1:0"
    cfg["store"] = f"sqlite:///{tmp_path / 'demo.db'}"
    cfg["auth"]["dev_issuer"]["key_file"] = str(tmp_path / "dev.jwk")
    cfg["servers"]["demo"]["command"] = [sys.executable, "-m", "portcullis.demo.server"]
    config = tmp_path / "demo.yaml"
    with config.open("w") as f:
        yaml.dump(cfg, f)
    gw = start_gateway(config, cfg["store"])
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
