"""The agent tunnel's cost: the gateway reaching bench/upstream_fast.py directly vs through `portcullis agent`.

    .venv/bin/python bench/agent_bench.py [--quick] [--concurrency 1,8] [--repeats 3]

Both systems run in the same run, cells interleaved and repeated; medians reported. For each: calls per second,
p50/p99 latency, and CPU per call of the gateway and (for the tunnel) of the agent, measured by the load generator
from /proc over the measured window. The issue's targets: the tunnel adds at most 100 µs of CPU per call across
gateway and agent together, and at most 0.3 ms to p50 at concurrency 1.

Pinning (2+ CPUs): load generator and upstream on the first CPU, gateway and agent on the second.
Writes bench/results/agent-<name>.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import BENCH, GATEWAY_BIN, PY, Procs, free_port, log, machine_info

TARGET_ADDED_CPU_US = 100.0
TARGET_ADDED_P50_MS = 0.3


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--concurrency", default="1,8")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--name", default=None)
    args = ap.parse_args()
    repeats = args.repeats or (1 if args.quick else 3)
    concs = [int(c) for c in args.concurrency.split(",")]
    name = args.name or dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    avail = sorted(os.sched_getaffinity(0))
    load_cpu, proxy_cpu = (avail[0], avail[1]) if len(avail) >= 2 else (None, None)
    tmp = Path(tempfile.mkdtemp(prefix="portcullis-agent-bench-"))
    procs = Procs(tmp)
    runs: dict[tuple[str, int], list[dict[str, Any]]] = {}
    try:
        procs.start("upstream", [PY, str(BENCH / "upstream_fast.py"), "--port", "0"], load_cpu)
        ready = procs.wait_ready("upstream", 20)
        if ready is None:
            raise RuntimeError(procs.log_tail("upstream"))
        upstream = ready.split()[-1]
        systems: dict[str, tuple[str, list[str]]] = {}
        for system in ("direct", "agent"):
            port = free_port()
            cfg = tmp / f"{system}.yaml"
            server = f"url: {upstream}" if system == "direct" else "via: agent"
            lines = [f"listen: 127.0.0.1:{port}", f"store: sqlite:///{tmp / (system + '.db')}", "auth: {mode: none}"]
            lines += ["servers:", "  fast:", f"    {server}", "    era: session"]
            cfg.write_text("\n".join(lines) + "\n")
            gw = procs.start(f"gw-{system}", [str(GATEWAY_BIN), "serve", "--config", str(cfg)], proxy_cpu)
            if procs.wait_ready(f"gw-{system}", 30) is None:
                raise RuntimeError(procs.log_tail(f"gw-{system}"))
            watch = [f"gateway={gw.pid}"]
            if system == "agent":
                token = subprocess.run(
                    [str(GATEWAY_BIN), "agents", "create", "bench", "--config", str(cfg), "--servers", "fast"],
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout.strip()
                acfg = tmp / "agent.yaml"
                acfg.write_text(
                    json.dumps(
                        {"gateway": f"http://127.0.0.1:{port}/agent/connect", "servers": {"fast": {"url": upstream}}}
                    )
                )
                env = {**os.environ, "PORTCULLIS_AGENT_TOKEN": token}
                ag = procs.start("agent", [str(GATEWAY_BIN), "agent", "--config", str(acfg)], proxy_cpu, env=env)
                if procs.wait_ready("agent", 30) is None:
                    raise RuntimeError(procs.log_tail("agent"))
                watch.append(f"agent={ag.pid}")
            systems[system] = (f"http://127.0.0.1:{port}/mcp/fast", watch)
        for rep in range(repeats):
            for conc in concs:
                for system, (url, watch) in systems.items():
                    calls = (1500 if conc == 1 else 4000) // (2 if args.quick else 1)
                    cmd = [PY, str(BENCH / "loadgen.py"), "--url", url, "-c", str(conc), "-n", str(calls)]
                    cmd += ["--warmup", str(max(200, 10 * conc)), "--max-seconds", "20", "--hard-timeout", "90"]
                    cmd += ["--settle", "0.3"]
                    for w in watch:
                        cmd += ["--watch", w]
                    p = procs.start("loadgen", cmd, load_cpu)
                    p.wait(timeout=150)
                    procs.procs.pop("loadgen", None)
                    text = procs.log_text("loadgen")
                    line = next((ln for ln in reversed(text.splitlines()) if ln.startswith("{")), "{}")
                    r = json.loads(line)
                    cpu = r.get("cpu", {})
                    cell = {
                        "req_s": r.get("req_s"),
                        "p50_ms": r.get("p50_ms"),
                        "p99_ms": r.get("p99_ms"),
                        "errors": r.get("errors"),
                        "gateway_us": cpu.get("gateway", {}).get("cpu_us_per_call"),
                        "agent_us": cpu.get("agent", {}).get("cpu_us_per_call", 0.0),
                        "foreign_cores": r.get("foreign_cores"),
                    }
                    cell["total_us"] = (cell["gateway_us"] or 0) + (cell["agent_us"] or 0)
                    runs.setdefault((system, conc), []).append(cell)
                    log(f"rep {rep} c={conc} {system}: {cell}")
    finally:
        procs.stop_all()

    def med(system: str, conc: int, key: str) -> float | None:
        xs = [c[key] for c in runs.get((system, conc), []) if c.get(key) is not None]
        return round(statistics.median(xs), 3) if xs else None

    rows = []
    for conc in concs:
        base_cpu, base_p50 = med("direct", conc, "total_us"), med("direct", conc, "p50_ms")
        for system in ("direct", "agent"):
            tot, p50 = med(system, conc, "total_us"), med(system, conc, "p50_ms")
            rows.append(
                {
                    "concurrency": conc,
                    "system": system,
                    "req_s": med(system, conc, "req_s"),
                    "p50_ms": p50,
                    "p99_ms": med(system, conc, "p99_ms"),
                    "gateway_us": med(system, conc, "gateway_us"),
                    "agent_us": med(system, conc, "agent_us"),
                    "total_us": tot,
                    "added_cpu_us": round(tot - base_cpu, 1) if tot is not None and base_cpu is not None else None,
                    "added_p50_ms": round(p50 - base_p50, 3) if p50 is not None and base_p50 is not None else None,
                    "errors": sum(c["errors"] or 0 for c in runs.get((system, conc), [])),
                }
            )
    out = {"name": name, "repeats": repeats, "machine": machine_info(), "rows": rows}
    out["runs"] = {f"{s}@{c}": v for (s, c), v in runs.items()}
    path = BENCH / "results" / f"agent-{name}.json"
    path.write_text(json.dumps(out, indent=2))
    print("| c | system | req/s | p50 ms | p99 ms | gateway µs/call | agent µs/call | added CPU µs | added p50 ms |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['concurrency']} | {r['system']} | {r['req_s']} | {r['p50_ms']} | {r['p99_ms']} | {r['gateway_us']} "
            f"| {r['agent_us']} | {r['added_cpu_us']} | {r['added_p50_ms']} |"
        )
    print(f"\ntargets: added CPU ≤ {TARGET_ADDED_CPU_US:.0f} µs/call, added p50 at c=1 ≤ {TARGET_ADDED_P50_MS} ms")
    print(f"written: {path.relative_to(BENCH.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
