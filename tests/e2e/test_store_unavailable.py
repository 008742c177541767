"""The recording store goes away under a running gateway: traffic is refused, never passed unrecorded; an alert
fires; traffic recovers by itself when the store comes back; every response a client received has its record and
the chain verifies.

Three ways the store goes: the disk fills up (SQLite on a size-limited tmpfs, a real ENOSPC), the store's files
are made read-only (immutable), and PostgreSQL is stopped (a cluster of the test's own).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from portcullis import errors
from portcullis.store.db import make_engine, upgrade
from portcullis.store.verify import verify
from tests.support.audit import key_files
from tests.support.conformance import fixture_server_argv
from tests.support.gateway import RunningGateway, write_config
from tests.support.postgres import temp_postgres
from tests.support.procs import running_process, start_process
from tests.support.raw import ACCEPT, final_message, initialize
from tests.support.records import load_records
from tests.support.waiting import eventually, eventually_async

pytestmark = pytest.mark.e2e


@dataclass
class Alerts:
    url: str
    got: list[dict[str, Any]] = field(default_factory=list)

    def events(self) -> list[str]:
        return [a["event"] for a in self.got]


@contextlib.asynccontextmanager
async def alert_receiver() -> AsyncIterator[Alerts]:
    """A local webhook that the gateway's store alerts go to."""
    alerts = Alerts("")

    async def hook(request: web.Request) -> web.Response:
        alerts.got.append(await request.json())
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    alerts.url = f"http://127.0.0.1:{port}/hook"
    try:
        yield alerts
    finally:
        await runner.cleanup()


class Client:
    """One MCP session (session era), calling the fixture's echo tool; keeps every response it received."""

    def __init__(self, http: aiohttp.ClientSession, url: str) -> None:
        self.http, self.url = http, url
        self.headers = {"Content-Type": "application/json", "Accept": ACCEPT}
        self.received: list[bytes] = []
        self.n = 0

    async def open(self) -> None:
        init = initialize()
        async with self.http.post(self.url, json=init, headers=self.headers) as r:
            assert r.status == 200, await r.text()
            self.headers["Mcp-Session-Id"] = r.headers["Mcp-Session-Id"]
            await r.read()
        self.headers["MCP-Protocol-Version"] = "2025-11-25"
        note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        async with self.http.post(self.url, json=note, headers=self.headers) as r:
            assert r.status == 202

    async def call(self) -> tuple[int, dict[str, Any]]:
        self.n += 1
        req = {
            "jsonrpc": "2.0",
            "id": self.n,
            "method": "tools/call",
            "params": {"name": "echo", "arguments": {"text": f"call {self.n}"}},
        }
        async with self.http.post(self.url, json=req, headers=self.headers) as r:
            raw = await r.read()
            ctype = r.headers.get("Content-Type", "")
        raw = final_message(raw, ctype)
        body = json.loads(raw)
        if r.status == 200 and "result" in body:
            self.received.append(raw)
        return r.status, body

    async def refused(self) -> None:
        """The call is answered with the store error: HTTP 503 (a JSON reply), or in-band when the response was
        already streaming (an SSE stream, HTTP 200 sent before the store failed)."""
        status, body = await self.call()
        assert "result" not in body, body
        assert body["error"]["code"] == errors.STORE_UNAVAILABLE, body
        assert body["error"]["message"].startswith("Service Unavailable: the recording store cannot be written")
        assert status in (200, 503)


async def outage(
    gw: RunningGateway, alerts: Alerts, break_store: Callable[[], None], repair_store: Callable[[], None]
) -> Client:
    """Calls before, during and after the store is away; the checks that hold for every kind of outage."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        c = Client(http, gw.url("fixture"))
        await c.open()
        for _ in range(3):
            assert (await c.call())[0] == 200

        break_store()
        await c.refused()  # the response is held back: its record could not be made durable
        async with http.get(f"{gw.base}/readyz") as r:
            assert r.status == 503 and (await r.json())["store"] == "failing"
        await eventually(lambda: "recording_store_failing" in alerts.events(), 20, "the store-failing alert")
        for _ in range(2):  # still refused, request by request, while the store is away
            await c.refused()

        repair_store()

        async def recovered() -> bool:
            return (await c.call())[0] == 200

        await eventually_async(recovered, 30, "traffic to recover by itself")
        await eventually(lambda: "recording_store_recovered" in alerts.events(), 20, "the recovered alert")
        for _ in range(3):
            assert (await c.call())[0] == 200
        async with http.get(f"{gw.base}/readyz") as r:
            assert r.status == 200
    assert not any("Bearer" in json.dumps(a) for a in alerts.got)
    return c


def check_trail(store: str, c: Client, pub: Path, at_least: int = 7) -> None:
    recs = load_records(store)
    recorded = {bytes(r["payload"]) for r in recs if r["direction"] == "s2c" and r["payload"] is not None}
    missing = [m for m in c.received if m not in recorded]
    assert not missing, f"{len(missing)} received responses have no record"
    assert len(c.received) >= at_least
    from portcullis.store.audit_keys import load_verifier

    engine = make_engine(store)
    try:
        v = verify(engine, load_verifier(str(pub)))
        assert v.ok and v.unchained == 0, v.problems
    finally:
        engine.dispose()


def gateway_config(tmp: Path, store: str, fixture_url: str, alerts: Alerts, key: Path) -> Path:
    path, _ = write_config(
        tmp,
        {"fixture": {"url": fixture_url}},
        recording={"signing_key_file": str(key), "alerts": [{"url": alerts.url}]},
    )
    cfg = json.loads(path.read_text())
    cfg["store"] = store
    path.write_text(json.dumps(cfg))
    return path


def serve(config: Path) -> RunningGateway:
    argv = [sys.executable, "-m", "portcullis", "serve", "--config", str(config)]
    proc = start_process(argv, env=dict(os.environ), ready_timeout=30)
    return RunningGateway(proc, proc.ready_value, config, "")


@contextlib.contextmanager
def small_tmpfs(size: str) -> Iterator[Path]:
    where = Path(tempfile.mkdtemp(prefix="portcullis-full-"))
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True)
    if res.returncode != 0:
        shutil.rmtree(where, ignore_errors=True)
        pytest.skip(f"a size-limited tmpfs needs CAP_SYS_ADMIN: {res.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)
        shutil.rmtree(where, ignore_errors=True)


async def test_disk_full_refuses_traffic_and_recovers(tmp_path: Path) -> None:
    key, pub = key_files(tmp_path)
    with (
        small_tmpfs("4m") as disk,
        running_process(fixture_server_argv(port=0), ready_timeout=30) as fixture,
    ):
        store = f"sqlite:///{disk / 'portcullis.db'}"
        async with alert_receiver() as alerts:
            gw = serve(gateway_config(tmp_path, store, fixture.ready_value, alerts, key))
            filler = disk / "filler"

            def fill() -> None:  # every free block taken: the store's next write gets ENOSPC
                with open(filler, "wb") as f, contextlib.suppress(OSError):
                    while True:
                        f.write(b"\0" * 65536)
                        f.flush()

            try:
                c = await outage(gw, alerts, fill, filler.unlink)
            finally:
                gw.proc.stop(timeout=10)
        check_trail(store, c, pub)


def chattr(flag: str, *paths: Path) -> None:
    res = subprocess.run(["chattr", flag, *map(str, paths)], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"the store's file system has no immutable flag (chattr {flag}): {res.stderr.strip()}")


def release(files: list[Path]) -> None:
    """Whatever happened: no immutable file left behind for the temporary directory's clean-up."""
    subprocess.run(["chattr", "-i", *map(str, files)], check=False, capture_output=True)


async def test_read_only_store_file_refuses_traffic_and_recovers(tmp_path: Path) -> None:
    """The store's files are made read-only under the running gateway. A mode change (chmod) does not stop a process
    that has the file open, and root ignores it anyway; the immutable flag (chattr +i) does, for every writer."""
    key, pub = key_files(tmp_path)
    db = tmp_path / "portcullis.db"
    store = f"sqlite:///{db}"
    files = [db, db.with_name(db.name + "-wal")]
    with running_process(fixture_server_argv(port=0), ready_timeout=30) as fixture:
        async with alert_receiver() as alerts:
            gw = serve(gateway_config(tmp_path, store, fixture.ready_value, alerts, key))
            try:
                c = await outage(gw, alerts, lambda: chattr("+i", *files), lambda: chattr("-i", *files))
            finally:
                release(files)
                gw.proc.stop(timeout=10)
    check_trail(store, c, pub)


async def test_postgresql_stopped_refuses_traffic_and_recovers(tmp_path: Path) -> None:
    key, pub = key_files(tmp_path)
    with temp_postgres() as pg, running_process(fixture_server_argv(port=0), ready_timeout=30) as fixture:
        engine = make_engine(pg.url)
        upgrade(engine)
        engine.dispose()
        async with alert_receiver() as alerts:
            gw = serve(gateway_config(tmp_path, pg.url, fixture.ready_value, alerts, key))
            try:
                c = await outage(gw, alerts, pg.stop, pg.start)
            finally:
                gw.proc.stop(timeout=10)
        check_trail(pg.url, c, pub)
