from __future__ import annotations

import asyncio
import json
from pathlib import Path

from click.testing import CliRunner

from portcullis.cli.main import cli
from portcullis.flow import Record
from portcullis.pipeline.record import event_record
from portcullis.store.db import ensure_schema, make_engine
from portcullis.store.writer import SessionEnd, SessionOpen, StoreWriter


def populate(path: Path) -> str:
    engine = make_engine(f"sqlite:///{path}")
    ensure_schema(engine, auto_create=True)

    async def go() -> None:
        w = StoreWriter(engine)
        w.start(asyncio.get_running_loop())
        req = b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"}}'
        res = b'{"jsonrpc":"2.0","id":1,"result":{"content":[]}}'
        await w.write(
            [
                SessionOpen("S1", "demo", "session", "2025-11-25", '{"name":"cli-test","version":"9"}', None, None, 1),
                Record(2, "demo", "S1", "c2s", "request", "tools/call", "1", 7, req),
                Record(3, "demo", "S1", "s2c", "result", "tools/call", "1", 7, res, "ok", 1500),
                event_record("demo", "S1", "session_close", "client ended the session"),
                SessionEnd("S1", 4, "client ended the session"),
            ]
        )
        w.close()

    asyncio.run(go())
    engine.dispose()
    return f"sqlite:///{path}"


def test_sessions_list_and_show(tmp_path: Path) -> None:
    store = populate(tmp_path / "s.db")
    runner = CliRunner()
    out = runner.invoke(cli, ["sessions", "list", "--store", store])
    assert out.exit_code == 0, out.output
    assert "S1" in out.output and "cli-test 9" in out.output and "client ended the session" in out.output
    out = runner.invoke(cli, ["sessions", "show", "S1", "--store", store])
    assert out.exit_code == 0
    lines = [line for line in out.output.splitlines() if "tools/call" in line]
    assert len(lines) == 2 and "→" in lines[0] and "←" in lines[1] and "1.5ms" in lines[1]
    out = runner.invoke(cli, ["sessions", "show", "S1", "--store", store, "--json"])
    doc = json.loads(out.output)
    assert doc["session"]["server"] == "demo"
    assert [r["kind"] for r in doc["records"]] == ["request", "result", "session_close"]
    assert doc["records"][0]["payload"]["params"]["name"] == "echo"
    out = runner.invoke(cli, ["sessions", "show", "nope", "--store", store])
    assert out.exit_code == 1 and "no session" in out.output


def test_config_check(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("listen: 127.0.0.1:9\nservers:\n  a:\n    url: http://127.0.0.1:1/mcp\n")
    out = CliRunner().invoke(cli, ["config", "check", str(good)])
    assert out.exit_code == 0 and "OK" in out.output and "a (streamable-http)" in out.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("listen: 127.0.0.1:9\nservers:\n  a:\n    ulr: http://x\n")
    out = CliRunner().invoke(cli, ["config", "check", str(bad)])
    assert out.exit_code == 2
    assert f"{bad}:4:5: servers.a.ulr: unknown key" in out.output
