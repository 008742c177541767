"""Start a real gateway process (``portcullis serve``) for end-to-end tests."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.procs import ManagedProcess, start_process

REPO_ROOT = Path(__file__).resolve().parents[2]
EVERYTHING_JS = REPO_ROOT / "node_modules" / "@modelcontextprotocol" / "server-everything" / "dist" / "index.js"
FIXTURE = REPO_ROOT / "tests" / "fixtures" / "conformance_server.py"


@dataclass
class RunningGateway:
    proc: ManagedProcess
    base: str
    config_path: Path
    store: str

    def url(self, server: str) -> str:
        return f"{self.base}/mcp/{server}"


def write_config(tmp: Path, servers: Mapping[str, Any], **extra: Any) -> tuple[Path, str]:
    store = f"sqlite:///{tmp / 'portcullis.db'}"
    cfg: dict[str, Any] = {"listen": "127.0.0.1:0", "store": store, "auth": {"mode": "none"}, "servers": dict(servers)}
    cfg.update(extra)
    path = tmp / "portcullis.yaml"
    path.write_text(json.dumps(cfg, indent=2))  # JSON is YAML
    return path, cfg["store"]


def start_gateway(config_path: Path, store: str, env: Mapping[str, str] | None = None) -> RunningGateway:
    proc = start_process(
        [sys.executable, "-m", "portcullis", "serve", "--config", str(config_path)],
        env={**os.environ, **(env or {})},
        ready_timeout=30,
    )
    return RunningGateway(proc, proc.ready_value, config_path, store)


@contextlib.contextmanager
def running_gateway(tmp: Path, servers: Mapping[str, Any], **extra: Any) -> Iterator[RunningGateway]:
    path, store = write_config(tmp, servers, **extra)
    gw = start_gateway(path, store)
    try:
        yield gw
    finally:
        gw.proc.stop(timeout=10)


def everything_stdio() -> dict[str, Any]:
    return {"command": ["node", str(EVERYTHING_JS), "stdio"]}


def demo_stdio() -> dict[str, Any]:
    """The bundled demo server (echo, query_customers with PII, drop_table, …) as a stdio upstream."""
    return {"command": [sys.executable, "-m", "portcullis.demo.server"]}
