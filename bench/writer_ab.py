"""Same-run A/B of store writer variants inside the real gateway (bench/run.py's harness and figures).

    .venv/bin/python bench/writer_ab.py [--writers legacy,new] [--concurrency 1,8,64] [--repeats 3] [--quick]

Starts the upstream, the raw proxy and one gateway per writer variant (``bench/gateway_variant.py WRITER serve``,
each on the proxy CPU, with its own SQLite store, durability ``commit``), then runs bench/loadgen.py cells
interleaved across systems and repeats, exactly as bench/run.py does, and prints its table (CPU µs per call, CPU
ratio against the raw proxy of the same repeat, added p50 against direct) plus the per-thread CPU split.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import run as benchrun  # noqa: E402


def start_variant(procs: benchrun.Procs, writer: str, tmp: Path, upstream_url: str, cpu: int | None) -> benchrun.System:
    name = f"gw[{writer}]"
    port = benchrun.free_port()
    cfg = tmp / f"{writer}.yaml"
    benchrun.gateway_config(cfg, port, upstream_url, tmp / f"{writer}.db", None)
    procs.start(name, [benchrun.PY, str(BENCH / "gateway_variant.py"), writer, "serve", "--config", str(cfg)], cpu)
    ready = procs.wait_ready(name, 30)
    if ready is None:
        raise RuntimeError(f"{name} did not start:\n{procs.log_tail(name)}")
    m = re.search(r"http://[^\s/]+:(\d+)", ready)
    if m:
        port = int(m.group(1))
    return benchrun.System(name, f"http://127.0.0.1:{port}/mcp/fast", procs.procs[name].pid)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--writers", default="legacy,new")
    ap.add_argument("--concurrency", default="1,8,64")
    ap.add_argument("--payload", default="echo", choices=["echo", "blob10k"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="run.py --quick call counts")
    ap.add_argument("--no-direct", action="store_true", help="skip the direct cells (no added-p50 figures)")
    ap.add_argument("--name", default=None)
    args = ap.parse_args(argv)
    writers = [w for w in args.writers.split(",") if w]
    concs = [int(c) for c in args.concurrency.split(",") if c]
    started = dt.datetime.now(dt.UTC)
    name = args.name or "writer-ab-" + started.strftime("%Y%m%d-%H%M%S")
    avail = sorted(os.sched_getaffinity(0))
    load_cpu, proxy_cpu = (avail[0], avail[1]) if len(avail) >= 2 else (None, None)

    def calls_for(conc: int) -> int:
        return {1: 1000, 8: 2500}.get(conc, 3000) if args.quick else {1: 2000, 8: 5000}.get(conc, 6000)

    tmp = Path(tempfile.mkdtemp(prefix="portcullis-ab-"))
    procs = benchrun.Procs(tmp)
    runs: list[dict[str, Any]] = []
    systems: list[benchrun.System] = []
    try:
        if load_cpu is not None:
            os.sched_setaffinity(0, {load_cpu})
        up = procs.start("upstream", [benchrun.PY, str(BENCH / "upstream_fast.py"), "--port", "0"], load_cpu)
        ready = procs.wait_ready("upstream", 20)
        if ready is None:
            raise RuntimeError("upstream did not start")
        upstream_url = ready.split()[-1]
        if not args.no_direct:
            systems.append(benchrun.System("direct", upstream_url, None))
        rp = procs.start(
            "raw_proxy",
            [benchrun.PY, str(BENCH / "raw_proxy.py"), "--upstream", upstream_url, "--port", "0"],
            proxy_cpu,
        )
        ready = procs.wait_ready("raw_proxy", 20)
        if ready is None:
            raise RuntimeError("raw_proxy did not start")
        systems.append(benchrun.System("raw_proxy", ready.split()[-1], rp.pid))
        for w in writers:
            systems.append(start_variant(procs, w, tmp, upstream_url, proxy_cpu))
        i = 0
        total = args.repeats * len(concs) * len(systems)
        for rep in range(args.repeats):
            for conc in concs:
                for s in systems:
                    i += 1
                    res = benchrun.run_loadgen(
                        procs,
                        s,
                        up.pid,
                        conc=conc,
                        tool=args.payload,
                        era="session",
                        calls=calls_for(conc),
                        warmup=max(100, 10 * conc),
                        max_seconds=10.0 if args.quick else 20.0,
                        hard_timeout=90.0,
                        settle=0.3,
                        cpu=load_cpu,
                        tag=f"{i}",
                    )
                    runs.append(
                        {
                            "repeat": rep,
                            "era": "session",
                            "tool": args.payload,
                            "concurrency": conc,
                            "system": s.name,
                            "result": res,
                        }
                    )
                    pcpu = (res.get("cpu") or {}).get("proxy", {}).get("cpu_us_per_call")
                    benchrun.log(
                        f"[{i}/{total}] {s.name:>16} c={conc:<3} req/s={benchrun.fmt(res.get('req_s'), 0):>6} "
                        f"p50={benchrun.fmt(res.get('p50_ms'), 3)} err={res.get('errors')} "
                        f"cpu/call={benchrun.fmt(pcpu, 0)}µs"
                    )
    finally:
        procs.stop_all()
    rows = benchrun.summarise(runs, [s.name for s in systems])
    notes = []
    for r in rows:
        sp = r.get("proxy_us_per_call_split") or {}
        if r["system"].startswith("gw[") and sp.get("main_thread") is not None:
            notes.append(
                f"{r['system']} c={r['concurrency']}: main thread {sp['main_thread']:.0f} µs/call, "
                f"other threads {sp['other_threads'] or 0:.0f} µs/call"
            )
    meta = {
        "name": name,
        "mode": "writer A/B" + (" quick" if args.quick else ""),
        "started": started.isoformat(),
        "repeats": args.repeats,
        "pinning": "loadgen+upstream on CPU 0, proxy under test on CPU 1" if load_cpu is not None else "none",
        "settle_s": 0.3,
        "machine": benchrun.machine_info(),
    }
    md = benchrun.markdown(rows, meta, [], notes)
    out = BENCH / "results" / f"{name}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "summary": rows, "runs": runs, "markdown": md}, indent=1) + "\n")
    print(md)
    print(f"\nresults: {out.relative_to(benchrun.ROOT)}")
    shutil.rmtree(tmp, ignore_errors=True)
    time.sleep(0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
