"""Scale-out benchmark: one gateway on SQLite vs one and two gateways on PostgreSQL, in the same run.

    .venv/bin/python bench/replicas_bench.py [--quick] [--concurrency 16] [--repeats 3]

Systems (each behind the same bench/upstream_fast.py, auth off, recording on with durability ``commit``):

- ``sqlite-1``: one gateway, SQLite store (the zero-setup default; the baseline);
- ``pg-1``: one gateway, PostgreSQL store (the machine's server on 127.0.0.1:5432, database ``test``, a schema of
  the run's own, dropped at the end) — its CPU per call against ``sqlite-1`` is the per-call cost of the backend;
- ``pg-2``: two gateways on that PostgreSQL, each with its own audit chain; the load is split between them (two
  load generators, half the concurrency each, sessions sticky to a replica as behind a load balancer).

For every cell: calls per second (summed over load generators), p50/p99 latency (the worse of the two for pg-2),
CPU per call of the gateway processes (summed), and of PostgreSQL's backends for the run's database. Cells are
interleaved across systems and repeated; medians are reported, with ratios against ``sqlite-1`` measured in the same
run. On a 2-core machine the load generator, the upstream, PostgreSQL and the gateways share two cores: the figure
that carries over to a cluster is CPU per call, not calls per second.

Writes bench/results/replicas-<name>.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import BENCH, GATEWAY_BIN, PY, Procs, free_port, log, machine_info

PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def pg_backend_cpu_s(schema: str) -> float:
    """CPU seconds (utime+stime) of the PostgreSQL backends serving this run's connections (application_name)."""
    from sqlalchemy import create_engine, text

    eng = create_engine(PG_ADMIN)
    try:
        with eng.connect() as conn:
            pids = [
                r[0]
                for r in conn.execute(
                    text("SELECT pid FROM pg_stat_activity WHERE application_name = :a"), {"a": schema}
                )
            ]
    finally:
        eng.dispose()
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / 100.0  # clock ticks (USER_HZ = 100)
        except (OSError, IndexError, ValueError):
            continue
    return total


def gateway_config(path: Path, port: int, upstream: str, store: str, chain: str | None) -> None:
    lines = [f"listen: 127.0.0.1:{port}", f"store: {store}", "auth: {mode: none}", "servers:", "  fast:"]
    lines += [f"    url: {upstream}"]
    if chain:
        lines += ["recording:", f"  chain: {chain}"]
    path.write_text("\n".join(lines) + "\n")


def start(procs: Procs, name: str, tmp: Path, upstream: str, store: str, chain: str | None) -> tuple[str, int]:
    port = free_port()
    cfg = tmp / f"{name}.yaml"
    gateway_config(cfg, port, upstream, store, chain)
    p = procs.start(name, [str(GATEWAY_BIN), "serve", "--config", str(cfg)], None)
    if procs.wait_ready(name, 30) is None:
        raise RuntimeError(f"{name} did not start:\n{procs.log_tail(name)}")
    return f"http://127.0.0.1:{port}/mcp/fast", p.pid


def loadgens(
    procs: Procs, targets: list[tuple[str, int]], conc: int, calls: int, upstream_pid: int
) -> list[dict[str, Any]]:
    """One load generator per target, started together; each gets its share of concurrency and calls."""
    running = []
    for i, (url, pid) in enumerate(targets):
        cmd = [PY, str(BENCH / "loadgen.py"), "--url", url, "-c", str(max(1, conc // len(targets)))]
        cmd += ["-n", str(calls // len(targets)), "--warmup", str(max(100, 10 * conc)), "--max-seconds", "20"]
        cmd += [
            "--hard-timeout",
            "90",
            "--settle",
            "0.3",
            "--watch",
            f"gw={pid}",
            "--watch",
            f"upstream={upstream_pid}",
        ]
        running.append((f"lg{i}", procs.start(f"lg{i}", cmd, None)))
    out = []
    for name, p in running:
        p.wait(timeout=150)
        procs.procs.pop(name, None)
        text = procs.log_text(name)
        line = next((ln for ln in reversed(text.splitlines()) if ln.startswith("{")), None)
        out.append(json.loads(line) if line else {"errors": 1, "count": 0, "abort_reason": text[-300:]})
    return out


def cell(results: list[dict[str, Any]], pg_cpu_s: float | None) -> dict[str, Any]:
    count = sum(r.get("count", 0) for r in results)
    gw_cpu_s = sum(r.get("cpu", {}).get("gw", {}).get("cpu_s", 0.0) for r in results)
    return {
        "req_s": sum(r.get("req_s") or 0 for r in results),
        "p50_ms": max((r.get("p50_ms") or 0) for r in results),
        "p99_ms": max((r.get("p99_ms") or 0) for r in results),
        "errors": sum(r.get("errors", 0) for r in results),
        "gw_cpu_us_per_call": round(gw_cpu_s / count * 1e6, 1) if count else None,
        "pg_cpu_us_per_call": round(pg_cpu_s / count * 1e6, 1) if count and pg_cpu_s is not None else None,
        "foreign_cores": max((r.get("foreign_cores") or 0) for r in results),
        "raw": results,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--name", default=None)
    args = ap.parse_args()
    repeats = args.repeats or (1 if args.quick else 3)
    calls = 3000 if args.quick else 8000
    name = args.name or dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    tmp = Path(tempfile.mkdtemp(prefix="portcullis-replicas-"))
    procs = Procs(tmp)
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    from sqlalchemy import create_engine, text

    admin = create_engine(PG_ADMIN)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    pg_store = f"postgresql://postgres@127.0.0.1:5432/test?options=-csearch_path%3D{schema}&application_name={schema}"
    runs: dict[str, list[dict[str, Any]]] = {"sqlite-1": [], "pg-1": [], "pg-2": []}
    try:
        cfg = tmp / "migrate.yaml"
        gateway_config(cfg, 0, "http://127.0.0.1:1/mcp", pg_store, None)
        subprocess.run([str(GATEWAY_BIN), "db", "upgrade", "--config", str(cfg)], check=True, capture_output=True)
        up = procs.start("upstream", [PY, str(BENCH / "upstream_fast.py"), "--port", "0"], None)
        ready = procs.wait_ready("upstream", 20)
        if ready is None:
            raise RuntimeError(procs.log_tail("upstream"))
        upstream = ready.split()[-1]
        for rep in range(repeats):
            for system in ("sqlite-1", "pg-1", "pg-2"):
                names = [f"{system}-{i}-{rep}" for i in range(2 if system == "pg-2" else 1)]
                targets = []
                for n in names:
                    store = f"sqlite:///{tmp / (n + '.db')}" if system == "sqlite-1" else pg_store
                    targets.append(
                        start(procs, n, tmp, upstream, store, f"bench-{n}" if system != "sqlite-1" else None)
                    )
                pg0 = pg_backend_cpu_s(schema) if system != "sqlite-1" else None
                t0 = time.monotonic()
                results = loadgens(procs, targets, args.concurrency, calls, up.pid)
                pg1 = pg_backend_cpu_s(schema) if system != "sqlite-1" else None
                c = cell(results, None if pg0 is None or pg1 is None else pg1 - pg0)
                c["wall_s"] = round(time.monotonic() - t0, 1)
                runs[system].append(c)
                log(
                    f"{system} rep {rep}: {c['req_s']:.0f} req/s, p50 {c['p50_ms']} ms, gateway "
                    f"{c['gw_cpu_us_per_call']} µs/call, pg {c['pg_cpu_us_per_call']} µs/call, errors {c['errors']}"
                )
                for n in names:
                    procs.stop(n)
    finally:
        procs.stop_all()
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()

    def med(system: str, key: str) -> float | None:
        xs = [c[key] for c in runs[system] if c.get(key) is not None]
        return round(statistics.median(xs), 2) if xs else None

    base_rps, base_cpu = med("sqlite-1", "req_s"), med("sqlite-1", "gw_cpu_us_per_call")
    rows = []
    for system in runs:
        rps, cpu = med(system, "req_s"), med(system, "gw_cpu_us_per_call")
        rows.append(
            {
                "system": system,
                "req_s": rps,
                "req_s_vs_sqlite": round(rps / base_rps, 2) if rps and base_rps else None,
                "p50_ms": med(system, "p50_ms"),
                "p99_ms": med(system, "p99_ms"),
                "gw_cpu_us_per_call": cpu,
                "gw_cpu_vs_sqlite": round(cpu / base_cpu, 2) if cpu and base_cpu else None,
                "pg_cpu_us_per_call": med(system, "pg_cpu_us_per_call"),
                "errors": sum(c["errors"] for c in runs[system]),
                "foreign_cores": med(system, "foreign_cores"),
            }
        )
    out = {"name": name, "concurrency": args.concurrency, "calls": calls, "repeats": repeats, "machine": machine_info()}
    out |= {"rows": rows, "runs": runs}
    path = BENCH / "results" / f"replicas-{name}.json"
    path.write_text(json.dumps(out, indent=2))
    print(
        "| system | req/s | vs sqlite-1 | p50 ms | p99 ms | gateway CPU µs/call | vs sqlite-1 | PG µs/call | errors |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['system']} | {r['req_s']} | {r['req_s_vs_sqlite']} | {r['p50_ms']} | {r['p99_ms']} | "
            f"{r['gw_cpu_us_per_call']} | {r['gw_cpu_vs_sqlite']} | {r['pg_cpu_us_per_call']} | {r['errors']} |"
        )
    print(f"\nwritten: {path.relative_to(BENCH.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
