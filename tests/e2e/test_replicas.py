"""Three gateway replicas on loopback sharing one PostgreSQL: a session opened on one continues on the others, one
replica killed mid-load loses no recorded message while the others carry on, and the audit trail (a chain per
replica) verifies as one."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from portcullis.store.db import make_engine, upgrade
from portcullis.store.verify import verify
from tests.support.conformance import fixture_server_argv
from tests.support.gateway import RunningGateway, start_gateway, write_config
from tests.support.postgres import pg_schema
from tests.support.procs import ManagedProcess, running_process
from tests.support.raw import ACCEPT, final_message, initialize
from tests.support.records import load_records
from tests.support.waiting import eventually

pytestmark = pytest.mark.e2e

REPLICAS = 3
CLIENTS = 6


@pytest.fixture
def store() -> Iterator[str]:
    with pg_schema() as url:
        engine = make_engine(url)
        upgrade(engine)  # `portcullis db upgrade`: replicas never migrate on their own
        engine.dispose()
        yield url


@pytest.fixture
def fixture() -> Iterator[ManagedProcess]:
    with running_process(fixture_server_argv(port=0), ready_timeout=30) as proc:
        yield proc


@pytest.fixture
def replicas(tmp_path: Path, store: str, fixture: ManagedProcess) -> Iterator[list[RunningGateway]]:
    gws: list[RunningGateway] = []
    try:
        for i in range(REPLICAS):
            where = tmp_path / f"r{i}"
            where.mkdir()
            # one host here, so each replica names its chain (in Kubernetes the pod name does it)
            config, _ = write_config(where, {"fx": {"url": fixture.ready_value}}, recording={"chain": f"replica-{i}"})
            cfg = json.loads(config.read_text())
            cfg["store"] = store
            config.write_text(json.dumps(cfg))
            gws.append(start_gateway(config, store))
        yield gws
    finally:
        for gw in gws:
            gw.proc.stop(timeout=10)


class Client:
    """One MCP session whose requests go round-robin over the replicas (a load balancer without affinity)."""

    def __init__(self, http: aiohttp.ClientSession, bases: list[str]) -> None:
        self.http, self.bases = http, bases
        self.headers = {"Content-Type": "application/json", "Accept": ACCEPT}
        self.turn = 0
        self.received: list[bytes] = []
        self.replicas_used: set[int] = set()

    async def send(self, body: dict[str, Any], alive: list[bool]) -> tuple[int, Any, Any]:
        """To the next live replica; a replica that dies under the request is skipped and the request re-sent."""
        for _ in range(len(self.bases) * 2):
            self.turn = (self.turn + 1) % len(self.bases)
            if not alive[self.turn]:
                continue
            try:
                async with self.http.post(f"{self.bases[self.turn]}/mcp/fx", json=body, headers=self.headers) as r:
                    raw = final_message(await r.read(), r.headers.get("Content-Type", ""))
                    self.replicas_used.add(self.turn)
                    return r.status, r.headers, json.loads(raw) if raw else None
            except (aiohttp.ClientError, ValueError, IndexError):
                continue  # that replica died mid-request: another one takes it
        raise AssertionError("no replica answered")

    async def open(self, alive: list[bool]) -> None:
        status, headers, _ = await self.send(initialize(), alive)
        assert status == 200
        self.headers |= {"Mcp-Session-Id": headers["Mcp-Session-Id"], "MCP-Protocol-Version": "2025-11-25"}
        status, _, _ = await self.send({"jsonrpc": "2.0", "method": "notifications/initialized"}, alive)
        assert status == 202

    async def echo(self, n: int, alive: list[bool]) -> None:
        req = {
            "jsonrpc": "2.0",
            "id": n,
            "method": "tools/call",
            "params": {"name": "echo", "arguments": {"text": f"{n}"}},
        }
        status, _, body = await self.send(req, alive)
        assert status == 200 and "result" in body, body
        self.received.append(json.dumps(body, separators=(",", ":")).encode())


async def test_sessions_continue_across_replicas_and_survive_one_dying(
    replicas: list[RunningGateway], store: str
) -> None:
    alive = [True] * REPLICAS
    bases = [gw.base for gw in replicas]
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        clients = [Client(http, bases) for _ in range(CLIENTS)]
        for c in clients:
            await c.open(alive)
        for n in range(1, 4):  # every session's calls land on every replica
            await asyncio.gather(*(c.echo(n, alive) for c in clients))
        assert all(c.replicas_used == {0, 1, 2} for c in clients)

        async def load(c: Client, start: int) -> None:
            for n in range(start, start + 20):
                await c.echo(n, alive)

        running = [asyncio.ensure_future(load(c, 10)) for c in clients]
        # kill replica 0 while calls are in flight
        await eventually(lambda: sum(len(c.received) for c in clients) >= CLIENTS * 6, 30, "load to run")
        os.kill(replicas[0].proc.pid, signal.SIGKILL)
        alive[0] = False
        await asyncio.wait_for(asyncio.gather(*running), 60)
    for gw in replicas[1:]:
        gw.proc.stop(timeout=10)

    recs = load_records(store)
    recorded = {bytes(r["payload"]) for r in recs if r["direction"] == "s2c" and r["payload"] is not None}
    received = [m for c in clients for m in c.received]
    normal = {json.dumps(json.loads(p), separators=(",", ":")).encode() for p in recorded}
    missing = [m for m in received if m not in normal]
    assert not missing, f"{len(missing)} of {len(received)} received responses have no record"
    assert sum(1 for r in recs if r["kind"] == "session_adopted") >= CLIENTS * 2
    engine = make_engine(store)
    try:
        v = verify(engine)
        assert v.ok and v.chains == REPLICAS and v.unchained == 0, v.problems
    finally:
        engine.dispose()
