"""Start `portcullis agent` processes and mint their tokens, for end-to-end tests of the tunnel."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sqlalchemy import select

from portcullis.store.db import make_engine
from portcullis.store.schema import agent_connections
from tests.support.procs import ManagedProcess, start_process


def create_token(config: Path, name: str, servers: list[str]) -> str:
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "portcullis",
            "agents",
            "create",
            name,
            "--config",
            str(config),
            "--servers",
            ",".join(servers),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    return res.stdout.strip()


def start_agent(
    where: Path, gateway_base: str, servers: Mapping[str, Any], token: str, argv_prefix: list[str] | None = None
) -> ManagedProcess:
    cfg = {"gateway": f"{gateway_base}/agent/connect", "servers": dict(servers), "reconnect_max": 1.0}
    path = where / "agent.yaml"
    path.write_text(json.dumps(cfg))
    env = {**os.environ, "PORTCULLIS_AGENT_TOKEN": token}
    argv = [*(argv_prefix or []), sys.executable, "-m", "portcullis", "agent", "--config", str(path)]
    return start_process(argv, env=env, ready_timeout=30)


def connected(store: str, name: str | None = None) -> list[dict[str, Any]]:
    """The agent connections the gateway reports as live (its agent_connections rows)."""
    engine = make_engine(store)
    try:
        q = select(agent_connections).where(agent_connections.c.disconnected_ns.is_(None))
        if name is not None:
            q = q.where(agent_connections.c.name == name)
        with engine.connect() as conn:
            return [dict(r) for r in conn.execute(q).mappings()]
    finally:
        engine.dispose()
