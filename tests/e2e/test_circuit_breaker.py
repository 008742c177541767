"""A dead upstream is not hammered: after the threshold the gateway answers at once (circuit open) instead of trying
again each time, and when the upstream comes back the circuit closes by itself."""

from __future__ import annotations

import json
import socket
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from tests.support.gateway import running_gateway
from tests.support.procs import running_process
from tests.support.raw import ACCEPT, final_message, initialize
from tests.support.waiting import eventually_async

pytestmark = pytest.mark.e2e

FAULTY = Path(__file__).resolve().parents[1] / "fixtures" / "faulty_upstream.py"


async def test_the_circuit_opens_on_a_dead_upstream_and_closes_when_it_is_back(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here yet
    servers = {
        "up": {"url": f"http://127.0.0.1:{port}/mcp", "era": "session", "breaker_threshold": 2, "breaker_cooldown": 0.5}
    }
    with running_gateway(tmp_path, servers) as gw:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
            h = {"Content-Type": "application/json", "Accept": ACCEPT}

            async def init() -> dict[str, object]:
                async with http.post(gw.url("up"), json=initialize(), headers=h) as r:
                    return dict(json.loads(final_message(await r.read(), r.headers.get("Content-Type", ""))))

            for _ in range(2):  # refused connections
                body = await init()
                assert body["error"]["code"] == -32001 and "unreachable" in body["error"]["message"]  # type: ignore[index]
            t0 = time.monotonic()
            body = await init()
            assert "circuit open after 2 failures" in body["error"]["message"]  # type: ignore[index]
            assert time.monotonic() - t0 < 0.5
            with running_process([sys.executable, str(FAULTY), "--port", str(port)], ready_timeout=30):

                async def back() -> bool:
                    return "result" in await init()

                await eventually_async(back, 10, "the circuit to close once the upstream is back")
