"""Profile the gateway under load: perf and py-spy on `portcullis serve` while bench/loadgen.py drives tools/call.

    .venv/bin/python bench/profile_gateway.py [--concurrency 1,8] [--seconds 6] [--rate 250] [--native] [--no-perf]
                                              [--writer VARIANT]

Starts bench/upstream_fast.py and the gateway as bench/run.py does (same temporary config, recording on, same
pinning: load side on the first CPU, the gateway on the second; the profilers run on the load-side CPU so they do
not take the gateway's core). ``--writer`` runs the gateway through bench/gateway_variant.py with another store
writer (e.g. ``legacy``) for a before/after profile. For each concurrency it starts a loadgen, lets it warm up, then
takes two windows of ``--seconds`` each:

1. ``perf record -e cpu-clock`` (if perf is installed): CPU-time samples, so the true split of CPU between the
   threads and, per thread, by shared object (libpython = the interpreter running Python code, libsqlite3, kernel,
   uvloop, aiohttp's C parser, ...) and by C symbol. Python 3.11 has no perf trampolines, so Python functions show
   up as ``_PyEval_EvalFrameDefault``: read it together with the py-spy window.
2. ``py-spy record --threads`` (idle off): Python stacks per thread (main event-loop thread, store-writer thread).
   py-spy's "idle" filter only drops threads it sees sleeping; a thread woken but waiting for the core or the GIL
   still counts, and so does time inside uvloop's C loop (no Python frame). Samples whose leaf is such a wait point
   (``--wait-leaf``, default: the writer's ``queue.get`` in ``StoreWriter._run`` and uvloop's ``Runner.run``) are
   counted as "waiting" and left out of the shares, so the shares are of the samples that run Python code.

Per thread it reports the CPU per call in the py-spy window (``/proc/PID/task/TID/schedstat``; calls counted from the
gateway's own store, two records per tools/call; the profiler's pauses inflate it, so compare shares), the top
functions by *self* samples (``function (file:line)``) and by *inclusive* samples (``function (file)``, counted once
per sample), each as a share of the thread's busy samples and as µs per call (share x the thread's CPU per call).

Writes the raw collapsed stacks (``raw-c<C>.txt``, for flamegraph.pl or speedscope), ``perf-c<C>.txt`` and a JSON +
markdown summary to bench/results/profile-<timestamp>/. Needs ``py-spy`` in the venv (``.venv/bin/pip install
py-spy``).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime as dt
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import run as benchrun  # noqa: E402  (bench/run.py: process handling and the gateway config, shared on purpose)

ROOT = BENCH.parent
PYSPY = ROOT / ".venv" / "bin" / "py-spy"
PERF = shutil.which("perf")
WAIT_LEAVES = (
    r"^StoreWriter\._run \(\S*writer\.py:\d+\)$",  # the writer thread blocked in queue.get (or woken, waiting)
    r"^Runner\.run \(asyncio/runners\.py:\d+\)$",  # inside uvloop's C loop: epoll_wait, and its own Cython work
)


def thread_cpu_ns(pid: int) -> dict[int, int]:
    """CPU ns (schedstat run time) of each thread of pid."""
    out: dict[int, int] = {}
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError, ValueError), open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                out[int(tid)] = int(f.read().split()[0])
    return out


def thread_names(pid: int) -> dict[int, str]:
    """Python thread names by OS thread id (py-spy dump)."""
    r = subprocess.run([str(PYSPY), "dump", "--pid", str(pid)], capture_output=True, text=True, timeout=60)
    return {int(m.group(1)): m.group(2) for m in re.finditer(r'Thread (\d+) \([^)]*\): "([^"]*)"', r.stdout)}


def store_max_seq(db: Path) -> int:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        row = con.execute("SELECT max(seq) FROM records").fetchone()
        return int(row[0] or 0)
    finally:
        con.close()


def strip_line(frame: str) -> str:
    """'f (pkg/mod.py:123)' -> 'f (pkg/mod.py)'."""
    if frame.endswith(")") and "(" in frame:
        head, _, loc = frame.rpartition(" (")
        file, _, line = loc[:-1].rpartition(":")
        if file and line.isdigit():
            return f"{head} ({file})"
    return frame


def parse_raw(path: Path, wait_leaves: list[re.Pattern[str]]) -> dict[str, dict[str, Any]]:
    """Collapsed stacks ("thread (TID): NAME;frame;...;leaf COUNT") -> per thread: samples, waiting, self, incl."""
    threads: dict[str, dict[str, Any]] = {}
    for line in path.read_text("utf-8", "replace").splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack or not count_s.isdigit():
            continue
        n = int(count_s)
        frames = stack.split(";")
        head = frames[0]
        tname, tid = head, None
        if head.startswith("thread ("):
            tid_s, _, name = head[len("thread (") :].partition("):")
            tname = name.strip() or head
            with contextlib.suppress(ValueError):
                tid = int(tid_s, 0)
            frames = frames[1:]
        t = threads.setdefault(
            tname,
            {"tid": tid, "samples": 0, "waiting": 0, "self": collections.Counter(), "incl": collections.Counter()},
        )
        t["samples"] += n
        if frames and any(p.search(frames[-1]) for p in wait_leaves):
            t["waiting"] += n
            continue
        if frames:
            t["self"][frames[-1]] += n
        seen = set()
        for fr in frames:
            key = strip_line(fr)
            if key not in seen:
                seen.add(key)
                t["incl"][key] += n
    return threads


def parse_perf(report: str, names: dict[int, str]) -> dict[str, Any]:
    """`perf report --sort pid,dso,sym --stdio -g none` -> per thread: share of the process, by dso, by symbol."""
    line_re = re.compile(r"^\s*([\d.]+)%\s+(\d+):\S*\s+(\S+)\s+\[[.k]\]\s+(.+?)\s*$")
    threads: dict[str, dict[str, Any]] = {}
    for line in report.splitlines():
        m = line_re.match(line)
        if not m:
            continue
        pct, tid, dso, sym = float(m.group(1)), int(m.group(2)), m.group(3), m.group(4)
        t = threads.setdefault(
            names.get(tid, str(tid)),
            {"tid": tid, "share": 0.0, "dso": collections.Counter(), "sym": collections.Counter()},
        )
        t["share"] += pct / 100
        t["dso"][dso] += pct / 100
        t["sym"][f"{sym} [{dso}]"] += pct / 100
    return threads


def thread_role(name: str) -> str:
    if name == "MainThread":
        return "main (event loop)"
    if "store-writer" in name:
        return "store writer"
    return name


def perf_window(pid: int, seconds: int, out: Path, pre: Any, names: dict[int, str]) -> dict[str, Any] | None:
    if PERF is None:
        return None
    data = out.with_suffix(".data")
    cmd = [PERF, "record", "-e", "cpu-clock", "-F", "1999", "-p", str(pid), "-o", str(data), "--", "sleep"]
    r = subprocess.run([*cmd, str(seconds)], capture_output=True, text=True, preexec_fn=pre, timeout=seconds + 60)
    if r.returncode != 0 or not data.exists():
        benchrun.log(f"perf record failed: {r.stderr[-300:]}")
        return None
    rep = subprocess.run(
        [PERF, "report", "-i", str(data), "--no-children", "--sort", "pid,dso,sym", "--stdio", "-g", "none"],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    out.write_text(rep)
    data.unlink(missing_ok=True)
    return parse_perf(rep, names)


def profile_one(
    procs: benchrun.Procs,
    gw: benchrun.System,
    db: Path,
    conc: int,
    args: argparse.Namespace,
    outdir: Path,
    load_cpu: int | None,
) -> dict[str, Any]:
    assert gw.proxy_pid is not None
    warm_s = 2.0
    total_s = warm_s + 2 * args.seconds + 30
    cmd = [
        benchrun.PY,
        str(BENCH / "loadgen.py"),
        "--url",
        gw.url,
        "-c",
        str(conc),
        "-n",
        "10000000",
        "--warmup",
        str(max(200, 20 * conc)),
        "--tool",
        args.tool,
        "--max-seconds",
        str(total_s),
        "--hard-timeout",
        str(total_s + 30),
        "--settle",
        "0",
    ]
    name = f"loadgen-prof-c{conc}"
    procs.start(name, cmd, load_cpu)
    time.sleep(warm_s)
    pre = (lambda: os.sched_setaffinity(0, {load_cpu})) if load_cpu is not None else None
    names = thread_names(gw.proxy_pid)
    perf = None if args.no_perf else perf_window(gw.proxy_pid, args.seconds, outdir / f"perf-c{conc}.txt", pre, names)
    raw = outdir / f"raw-c{conc}.txt"
    spy = [str(PYSPY), "record", "--pid", str(gw.proxy_pid), "--threads", "--rate", str(args.rate)]
    spy += ["--format", "raw", "--duration", str(args.seconds), "--output", str(raw)]  # whole seconds only
    if args.native:
        spy.append("--native")
    seq0 = store_max_seq(db)
    cpu0 = thread_cpu_ns(gw.proxy_pid)
    t0 = time.monotonic()
    r = subprocess.run(spy, capture_output=True, text=True, preexec_fn=pre, timeout=args.seconds + 60)
    wall = time.monotonic() - t0
    cpu1 = thread_cpu_ns(gw.proxy_pid)
    seq1 = store_max_seq(db)
    procs.stop(name)
    if r.returncode != 0 or not raw.exists():
        raise RuntimeError(f"py-spy failed (rc={r.returncode}): {r.stderr[-800:]}")
    calls = max(1, (seq1 - seq0) // 2)  # two records (request, response) per tools/call
    threads = parse_raw(raw, [re.compile(p) for p in args.wait_leaf])
    result: dict[str, Any] = {
        "concurrency": conc,
        "seconds": round(wall, 2),
        "calls": calls,
        "req_s": round(calls / wall, 1),
        "gateway_cpu_us_per_call": round(sum(cpu1.get(t, 0) - cpu0.get(t, 0) for t in cpu1) / 1e3 / calls, 1),
        "threads": {},
        "perf": None,
    }
    if perf is not None:
        result["perf"] = {
            n: {
                "tid": t["tid"],
                "share_of_process": round(t["share"], 4),
                "by_dso": [(d, round(v / t["share"], 4)) for d, v in t["dso"].most_common(8)],
                "by_symbol": [(s, round(v / t["share"], 4)) for s, v in t["sym"].most_common(args.top)],
            }
            for n, t in sorted(perf.items(), key=lambda kv: -kv[1]["share"])
            if t["share"] >= 0.005
        }
    for tname, t in sorted(threads.items(), key=lambda kv: -kv[1]["samples"]):
        tid = t["tid"]
        us_per_call = None
        if tid is not None and tid in cpu1:
            us_per_call = round((cpu1[tid] - cpu0.get(tid, 0)) / 1e3 / calls, 1)
        busy = max(1, t["samples"] - t["waiting"])

        def top(counter: collections.Counter[str], us: float | None = us_per_call, busy: int = busy) -> list[Any]:
            return [
                {
                    "frame": fr,
                    "samples": n,
                    "share": round(n / busy, 4),
                    "us_per_call": None if us is None else round(us * n / busy, 1),
                }
                for fr, n in counter.most_common(args.top)
            ]

        result["threads"][tname] = {
            "role": thread_role(tname),
            "tid": tid,
            "samples": t["samples"],
            "waiting_samples": t["waiting"],
            "cpu_us_per_call": us_per_call,
            "top_self": top(t["self"]),
            "top_inclusive": top(t["incl"]),
        }
    return result


def markdown(results: list[dict[str, Any]], args: argparse.Namespace) -> str:
    out = [
        f"Gateway profile (store writer: {args.writer or 'as installed'}): payload {args.tool}, {args.seconds} s "
        f"windows. perf: cpu-clock samples (CPU time). py-spy: {args.rate} Hz, "
        f"{'native + ' if args.native else ''}Python frames; shares are of the thread's busy samples (waiting "
        "leaves left out); µs/call = share x the thread's CPU per call in the py-spy window (the profiler's pauses "
        "inflate it; compare shares)."
    ]
    for res in results:
        out.append("")
        out.append(
            f"## c={res['concurrency']}: {res['calls']} calls, {res['req_s']} req/s, gateway CPU "
            f"{res['gateway_cpu_us_per_call']} µs/call (all threads, under py-spy)"
        )
        if res.get("perf"):
            out.append("")
            out.append("perf, CPU by thread and shared object (share of the thread):")
            out.append("")
            for tname, p in res["perf"].items():
                dsos = ", ".join(f"{d} {100 * v:.0f} %" for d, v in p["by_dso"] if v >= 0.01)
                out.append(f"- {thread_role(tname)}: {100 * p['share_of_process']:.0f} % of the process CPU; {dsos}")
            for tname, p in res["perf"].items():
                out.append("")
                out.append(f"| perf top symbols, {thread_role(tname)} | share of thread |")
                out.append("|---|---:|")
                for sym, v in p["by_symbol"][: args.top]:
                    out.append(f"| `{sym}` | {100 * v:.1f} % |")
        for tname, t in res["threads"].items():
            out.append("")
            wait_pct = 100 * t["waiting_samples"] / max(1, t["samples"])
            out.append(
                f"### {t['role']} [{tname}, tid {t['tid']}]: {t['samples']} py-spy samples ({wait_pct:.0f} % at a "
                f"wait leaf), {t['cpu_us_per_call']} µs CPU/call"
            )
            for kind in ("top_self", "top_inclusive"):
                out.append("")
                out.append(f"| {kind.replace('_', ' ')} | share | µs/call |")
                out.append("|---|---:|---:|")
                for row in t[kind]:
                    frame = row["frame"].replace("|", "\\|")
                    out.append(f"| `{frame}` | {100 * row['share']:.1f} % | {benchrun.fmt(row['us_per_call'], 1)} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--concurrency", default="1,8", help="comma list (default 1,8)")
    ap.add_argument("--seconds", type=int, default=6, help="each sampling window (whole seconds)")
    ap.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    ap.add_argument("--native", action="store_true", help="also sample C frames (py-spy --native; slow)")
    ap.add_argument("--no-perf", action="store_true", help="skip the perf window")
    ap.add_argument("--wait-leaf", action="append", default=None, help="regex of a waiting leaf frame (repeatable)")
    ap.add_argument("--tool", default="echo", choices=["echo", "blob10k", "mixed10k"])
    ap.add_argument("--writer", default=None, help="store writer variant (bench/gateway_variant.py), e.g. legacy")
    ap.add_argument("--top", type=int, default=20, help="rows per table")
    ap.add_argument("--out", default=None, help="output directory (default bench/results/profile-<timestamp>)")
    ap.add_argument("--no-pin", action="store_true")
    args = ap.parse_args(argv)
    if args.wait_leaf is None:
        args.wait_leaf = list(WAIT_LEAVES)
    if not PYSPY.exists():
        raise SystemExit(f"{PYSPY} missing: .venv/bin/pip install py-spy")
    concs = [int(c) for c in args.concurrency.split(",") if c.strip()]
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    outdir = Path(args.out) if args.out else BENCH / "results" / f"profile-{stamp}"
    outdir.mkdir(parents=True, exist_ok=True)
    avail = sorted(os.sched_getaffinity(0))
    load_cpu, gw_cpu = (avail[0], avail[1]) if len(avail) >= 2 and not args.no_pin else (None, None)

    tmp = Path(tempfile.mkdtemp(prefix="portcullis-prof-"))
    procs = benchrun.Procs(tmp)
    results: list[dict[str, Any]] = []
    try:
        if load_cpu is not None:
            os.sched_setaffinity(0, {load_cpu})
        up = procs.start("upstream", [benchrun.PY, str(BENCH / "upstream_fast.py"), "--port", "0"], load_cpu)
        ready = procs.wait_ready("upstream", 20)
        if ready is None:
            raise RuntimeError(f"upstream did not start:\n{procs.log_tail('upstream')}")
        upstream_url = ready.split()[-1]
        if args.writer:
            from writer_ab import start_variant

            gw = start_variant(procs, args.writer, tmp, upstream_url, gw_cpu)
            db = tmp / f"{args.writer}.db"
        else:
            gw_or_none, msg = benchrun.start_gateway(procs, "gateway", tmp, upstream_url, gw_cpu, None, 30.0)
            if gw_or_none is None:
                raise RuntimeError(msg)
            gw, db = gw_or_none, tmp / "gateway.db"
        benchrun.log(f"upstream pid {up.pid}, gateway pid {gw.proxy_pid} at {gw.url}")
        for conc in concs:
            res = profile_one(procs, gw, db, conc, args, outdir, load_cpu)
            results.append(res)
            benchrun.log(
                f"c={conc}: {res['calls']} calls, {res['gateway_cpu_us_per_call']} µs/call; "
                + ", ".join(f"{n}: {t['samples']} samples" for n, t in res["threads"].items())
            )
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    md = markdown(results, args)
    (outdir / "summary.json").write_text(json.dumps({"args": vars(args), "results": results}, indent=1) + "\n")
    (outdir / "summary.md").write_text(md + "\n")
    print(md)
    print(f"\nwritten: {outdir.relative_to(ROOT) if outdir.is_relative_to(ROOT) else outdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
