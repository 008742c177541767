"""Portcullis benchmark: one command, baselines measured in the same run.

    .venv/bin/python bench/run.py [--quick]

Starts bench/upstream_fast.py, bench/raw_proxy.py and the gateway (``portcullis serve --config CFG``), then for each
system (direct to upstream, raw proxy, gateway) x concurrency x payload runs bench/loadgen.py and records req/s,
p50/p99 latency, errors, and the CPU the process under test spent per call (utime+stime from /proc/PID/stat of it
and its descendants, before and after the measured window). Cells are interleaved across systems and repeated;
medians are reported, with added p50 vs direct and CPU ratios vs the raw proxy.

Pinning (when at least two CPUs are available): loadgen and upstream share the first CPU, the proxy under test gets
the second. The loadgen's own CPU utilisation and that of the whole load side (loadgen + upstream) are reported so a
loadgen-bound cell can be recognised.

Writes bench/results/<name>.json and prints a markdown table. Every child runs in its own process group and all of
them are killed at the end, also on error, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PY = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv" / "bin" / "python").exists() else sys.executable
GATEWAY_BIN = ROOT / ".venv" / "bin" / "portcullis"

PAYLOAD_LABEL = {"echo": "small", "blob10k": "10 KB", "mixed10k": "10 KB mixed", "blob1m": "1 MiB"}

# Performance targets (docs/performance.md).
TARGET_CPU_US = 200.0
TARGET_ADDED_P50_MS = 0.4


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------------------------
# Child processes
# ---------------------------------------------------------------------------------------------------------------
class Procs:
    """Children, each in its own session/process group; stop_all() kills the groups."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(
        self, name: str, cmd: list[str], cpu: int | None, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        logf = open(self.logdir / f"{name}.log", "wb")  # noqa: SIM115 - kept open for the child's lifetime
        pre = (lambda: os.sched_setaffinity(0, {cpu})) if cpu is not None else None
        p = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=logf,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            start_new_session=True,
            preexec_fn=pre,
            env=env,
        )
        logf.close()
        self.procs[name] = p
        return p

    def log_text(self, name: str) -> str:
        try:
            return (self.logdir / f"{name}.log").read_text("utf-8", "replace")
        except OSError:
            return ""

    def log_tail(self, name: str, lines: int = 20) -> str:
        return "\n".join(self.log_text(name).splitlines()[-lines:])

    def wait_ready(self, name: str, timeout: float) -> str | None:
        """The first log line containing READY, or None if the child died or timed out."""
        p = self.procs[name]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.log_text(name).splitlines():
                if "READY" in line:
                    return line.strip()
            if p.poll() is not None:
                return None
            time.sleep(0.05)
        return None

    def stop(self, name: str) -> None:
        p = self.procs.pop(name, None)
        if p is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(p.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(timeout=5)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(p.pid, signal.SIGKILL)  # also any grandchildren left in the group
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(timeout=5)

    def stop_all(self) -> None:
        for name in list(self.procs)[::-1]:
            self.stop(name)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def proc_cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat", "rb") as f:
        rest = f.read().rsplit(b")", 1)[1].split()
    return (int(rest[12]) + int(rest[13]) + int(rest[14]) + int(rest[15])) / os.sysconf("SC_CLK_TCK")


def machine_info() -> dict[str, Any]:
    cpu_model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    commit = None
    with contextlib.suppress(Exception):
        r = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=5)
        commit = r.stdout.strip() or None
    load = None
    with contextlib.suppress(OSError):
        load = os.getloadavg()
    return {
        "cpus": os.cpu_count(),
        "affinity": sorted(os.sched_getaffinity(0)),
        "cpu_model": cpu_model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "git_commit": commit,
        "loadavg_at_start": load,
    }


# ---------------------------------------------------------------------------------------------------------------
# Systems under test
# ---------------------------------------------------------------------------------------------------------------
class System:
    def __init__(self, name: str, url: str, proxy_pid: int | None) -> None:
        self.name = name
        self.url = url
        self.proxy_pid = proxy_pid  # None for "direct"
        self.idle_cpu_pct: float | None = None


def gateway_config(
    path: Path, port: int, upstream_url: str, db: Path, durability: str | None, masking: str | None = None
) -> None:
    lines = [
        f"listen: 127.0.0.1:{port}",
        f"store: sqlite:///{db}",
        "auth: {mode: none}",
        "servers:",
        "  fast:",
        f"    url: {upstream_url}",
    ]
    if durability:
        lines += ["recording:", f"  durability: {durability}"]
    if masking == "off":
        lines += ["masking: {enabled: false}"]
    path.write_text("\n".join(lines) + "\n")


def start_gateway(
    procs: Procs,
    name: str,
    tmp: Path,
    upstream_url: str,
    cpu: int | None,
    durability: str | None,
    timeout: float,
    masking: str | None = None,
) -> tuple[System | None, str]:
    if not GATEWAY_BIN.exists():
        return None, f"{GATEWAY_BIN.relative_to(ROOT)} does not exist (gateway CLI not installed yet)"
    port = free_port()
    cfg = tmp / f"{name}.yaml"
    gateway_config(cfg, port, upstream_url, tmp / f"{name}.db", durability, masking)
    p = procs.start(name, [str(GATEWAY_BIN), "serve", "--config", str(cfg)], cpu)
    ready = procs.wait_ready(name, timeout)
    if ready is None:
        rc = p.poll()
        why = f"exited with code {rc}" if rc is not None else f"printed no READY line within {timeout:.0f}s"
        tail = procs.log_tail(name)
        procs.stop(name)
        return None, f"`portcullis serve` {why}; log tail:\n{tail}"
    m = re.search(r"http://[^\s/]+:(\d+)", ready)  # the gateway's own word on its port, when it gives one
    if m:
        port = int(m.group(1))
    return System(name, f"http://127.0.0.1:{port}/mcp/fast", p.pid), ready


def run_loadgen(
    procs: Procs,
    system: System,
    upstream_pid: int,
    *,
    conc: int,
    tool: str,
    era: str,
    calls: int,
    warmup: int,
    max_seconds: float,
    hard_timeout: float,
    settle: float,
    cpu: int | None,
    tag: str,
) -> dict[str, Any]:
    cmd = [
        PY,
        str(BENCH / "loadgen.py"),
        "--url",
        system.url,
        "-c",
        str(conc),
        "-n",
        str(calls),
        "--warmup",
        str(warmup),
        "--tool",
        tool,
        "--era",
        era,
        "--max-seconds",
        str(max_seconds),
        "--hard-timeout",
        str(hard_timeout),
        "--settle",
        str(settle),
        "--watch",
        f"upstream={upstream_pid}",
    ]
    if system.proxy_pid is not None:
        cmd += ["--watch", f"proxy={system.proxy_pid}"]
    name = f"loadgen-{tag}"
    p = procs.start(name, cmd, cpu)
    try:
        p.wait(timeout=hard_timeout + 30)
    except subprocess.TimeoutExpired:
        procs.stop(name)
        return {"errors": 1, "count": 0, "aborted": True, "abort_reason": "loadgen process timed out"}
    procs.procs.pop(name, None)
    text = procs.log_text(name)
    with contextlib.suppress(OSError):
        (procs.logdir / f"{name}.log").unlink()
    for line in reversed(text.splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                break
    return {"errors": 1, "count": 0, "aborted": True, "abort_reason": f"loadgen rc={p.returncode}: {text[-500:]}"}


def store_counts(db: Path) -> dict[str, int] | str:
    """Rows per table of a stopped gateway's SQLite store (proof that recording was on)."""
    import sqlite3

    if not db.exists():
        return f"no store file at {db}"
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
        try:
            tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
            return {
                t: int(con.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0])
                for t in tables
                if not t.startswith("sqlite_")
            }
        finally:
            con.close()
    except sqlite3.Error as exc:
        return f"cannot read {db}: {exc}"


def idle_cpu_pct(pid: int, seconds: float) -> float:
    a = proc_cpu_s(pid)
    time.sleep(seconds)
    return round(100.0 * (proc_cpu_s(pid) - a) / seconds, 2)


# ---------------------------------------------------------------------------------------------------------------
# Summary
# ---------------------------------------------------------------------------------------------------------------
def med(xs: list[float | None]) -> float | None:
    vals = [x for x in xs if x is not None]
    return statistics.median(vals) if vals else None


def summarise(runs: list[dict[str, Any]], systems: list[str]) -> list[dict[str, Any]]:
    cells: dict[tuple[str, str, int, str], list[dict[str, Any]]] = {}
    for r in runs:
        cells.setdefault((r["era"], r["tool"], r["concurrency"], r["system"]), []).append(r)
    out = []
    keys = sorted({(e, t, c) for e, t, c, _ in cells}, key=lambda k: (k[0], list(PAYLOAD_LABEL).index(k[1]), k[2]))
    for era, tool, conc in keys:
        direct = {r["repeat"]: r for r in cells.get((era, tool, conc, "direct"), [])}
        raw = {r["repeat"]: r for r in cells.get((era, tool, conc, "raw_proxy"), [])}
        for sname in systems:
            rs = cells.get((era, tool, conc, sname))
            if not rs:
                continue
            res = [r["result"] for r in rs]
            row: dict[str, Any] = {
                "era": era,
                "tool": tool,
                "payload": PAYLOAD_LABEL[tool],
                "concurrency": conc,
                "system": sname,
                "repeats": len(rs),
                "req_s": med([x.get("req_s") for x in res]),
                "p50_ms": med([x.get("p50_ms") for x in res]),
                "p99_ms": med([x.get("p99_ms") for x in res]),
                "errors": sum(int(x.get("errors") or 0) for x in res),
                "calls": sum(int(x.get("count") or 0) for x in res),
                "aborted": any(x.get("aborted") for x in res),
                "cpu_us_per_call": med([(x.get("cpu") or {}).get("proxy", {}).get("cpu_us_per_call") for x in res]),
                "cpu_us_per_call_schedstat": med(
                    [(x.get("cpu") or {}).get("proxy", {}).get("cpu_us_per_call_schedstat") for x in res]
                ),
                "proxy_util": med([(x.get("cpu") or {}).get("proxy", {}).get("utilisation") for x in res]),
                "proxy_us_per_call_split": {
                    k: med([((x.get("cpu") or {}).get("proxy", {}).get("us_per_call_split") or {}).get(k) for x in res])
                    for k in ("main_thread", "other_threads", "child_processes")
                },
                "upstream_cpu_us_per_call": med(
                    [(x.get("cpu") or {}).get("upstream", {}).get("cpu_us_per_call") for x in res]
                ),
                "loadgen_cpu_util": med([x.get("loadgen_cpu_util") for x in res]),
                "foreign_cores": med([x.get("foreign_cores") for x in res]),
                "load_side_util": med(
                    [
                        (x["loadgen_cpu_util"] + ((x.get("cpu") or {}).get("upstream", {}).get("utilisation") or 0))
                        if x.get("loadgen_cpu_util") is not None
                        else None
                        for x in res
                    ]
                ),
            }
            # Paired by repeat (cells of one repeat ran back to back), then the median of the differences.
            if sname != "direct" and direct:
                diffs = [
                    r["result"]["p50_ms"] - direct[r["repeat"]]["result"]["p50_ms"]
                    for r in rs
                    if r["repeat"] in direct
                    and r["result"].get("p50_ms") is not None
                    and direct[r["repeat"]]["result"].get("p50_ms") is not None
                ]
                row["added_p50_ms"] = med(diffs)
                dr = [direct[r["repeat"]]["result"].get("req_s") for r in rs if r["repeat"] in direct]
                row["direct_req_s"] = med(dr)
            if sname not in ("direct", "raw_proxy") and raw:
                ratios = []
                for r in rs:
                    a = (r["result"].get("cpu") or {}).get("proxy", {}).get("cpu_us_per_call")
                    b = (
                        raw.get(r["repeat"], {})
                        .get("result", {})
                        .get("cpu", {})
                        .get("proxy", {})
                        .get("cpu_us_per_call")
                    )
                    if a is not None and b:
                        ratios.append(a / b)
                row["cpu_vs_raw"] = med(ratios)
                row["added_cpu_us_vs_raw"] = (
                    row["cpu_us_per_call"]
                    - med(
                        [(x["result"].get("cpu") or {}).get("proxy", {}).get("cpu_us_per_call") for x in raw.values()]
                    )
                    if row["cpu_us_per_call"] is not None
                    else None
                )
            out.append(row)
    return out


def fmt(v: Any, nd: int = 2) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any], verdicts: list[str], notes: list[str]) -> str:
    out = []
    m = meta["machine"]
    out.append(
        f"Benchmark `{meta['name']}` ({meta['mode']}), {meta['started']}, "
        f"{m['cpus']} CPUs ({m['cpu_model'] or 'unknown CPU'}), Python {m['python']}, "
        f"git {m['git_commit'] or 'uncommitted'}; {meta['repeats']} repeat(s) per cell, medians shown; "
        f"pinning: {meta['pinning']}."
    )
    out.append("")
    eras = sorted({r["era"] for r in rows})
    for era in eras:
        if len(eras) > 1:
            out.append(f"**{era} era**")
            out.append("")
        out.append(
            "| system | payload | conc | req/s | p50 ms | p99 ms | added p50 ms | errors | "
            "proxy CPU µs/call | CPU vs raw | proxy core | loadgen CPU | load-side CPU | other load |"
        )
        out.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in rows:
            if r["era"] != era:
                continue
            bound = " †" if (r["load_side_util"] or 0) >= 0.9 else ""
            out.append(
                "| "
                + " | ".join(
                    [
                        r["system"],
                        r["payload"],
                        str(r["concurrency"]),
                        fmt(r["req_s"], 0) + bound,
                        fmt(r["p50_ms"], 3),
                        fmt(r["p99_ms"], 3),
                        fmt(r.get("added_p50_ms"), 3),
                        str(r["errors"]) + (" (aborted)" if r["aborted"] else ""),
                        fmt(r["cpu_us_per_call"], 0),
                        ("x" + fmt(r.get("cpu_vs_raw"), 2)) if r.get("cpu_vs_raw") else "-",
                        fmt(100 * r["proxy_util"], 0) + " %" if r["proxy_util"] is not None else "-",
                        fmt(100 * r["loadgen_cpu_util"], 0) + " %" if r["loadgen_cpu_util"] is not None else "-",
                        fmt(100 * r["load_side_util"], 0) + " %" if r["load_side_util"] is not None else "-",
                        fmt(r["foreign_cores"], 2) if r["foreign_cores"] is not None else "-",
                    ]
                )
                + " |"
            )
        out.append("")
    out.append(
        "added p50: median over repeats of (system p50 - direct p50) measured back to back. "
        "proxy CPU: utime+stime of the process under test and its descendants over the measured window "
        f"(+{meta['settle_s']} s settle), divided by calls. proxy core: its CPU time over the window's wall time. "
        "load-side CPU: loadgen + upstream, which share one core; † marks cells at ≥ 90 % where req/s is bounded "
        "by the load side, not by the proxy. other load: CPU (in cores, of 2) used during the window by processes "
        "outside the benchmark; cells with much of it are noisy."
    )
    if verdicts:
        out.append("")
        out.append("Targets:")
        out.extend(f"- {v}" for v in verdicts)
    if notes:
        out.append("")
        out.append("Notes:")
        out.extend(f"- {n}" for n in notes)
    return "\n".join(out)


def verdicts_for(rows: list[dict[str, Any]], gw_names: list[str]) -> list[str]:
    out = []
    for g in gw_names:
        gr = [r for r in rows if r["system"] == g]
        if not gr:
            continue
        cpu = [(r["cpu_us_per_call"], r) for r in gr if r["cpu_us_per_call"] is not None]
        if cpu:
            worst, wr = max(cpu, key=lambda x: x[0])
            ok = worst <= TARGET_CPU_US
            line = (
                f"{g}: CPU per call ≤ {TARGET_CPU_US:.0f} µs (recording on): {'PASS' if ok else 'FAIL'} "
                f"(worst cell {worst:.0f} µs at {wr['payload']}, c={wr['concurrency']}, {wr['era']}; "
                f"best {min(c for c, _ in cpu):.0f} µs"
            )
            floor = [r["cpu_us_per_call"] for r in rows if r["system"] == "raw_proxy" and r["cpu_us_per_call"]]
            if floor:
                line += f"; raw proxy floor in this run {min(floor):.0f}-{max(floor):.0f} µs"
                if min(floor) > TARGET_CPU_US:
                    line += ", i.e. the target is below the Python floor on this machine"
            out.append(line + ")")
        c1 = [r for r in gr if r["concurrency"] == 1 and r.get("added_p50_ms") is not None]
        if c1:
            worst_r = max(c1, key=lambda r: r["added_p50_ms"])
            ok = worst_r["added_p50_ms"] <= TARGET_ADDED_P50_MS
            multi_era = len({r["era"] for r in c1}) > 1
            detail = ", ".join(
                f"{r['payload']}{' ' + r['era'] if multi_era else ''} {r['added_p50_ms']:.3f} ms" for r in c1
            )
            out.append(f"{g}: added p50 at c=1 ≤ {TARGET_ADDED_P50_MS} ms: {'PASS' if ok else 'FAIL'} ({detail})")
        c64 = [r for r in gr if r["concurrency"] == 64]
        if c64:
            errs = sum(r["errors"] for r in c64)
            aborted = any(r["aborted"] for r in c64)
            ok = errs == 0 and not aborted
            out.append(
                f"{g}: no errors at c=64: {'PASS' if ok else 'FAIL'} ({errs} errors in "
                f"{sum(r['calls'] for r in c64)} calls{', aborted' if aborted else ''})"
            )
    return out


# ---------------------------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description="Portcullis benchmark (baselines measured in the same run)")
    ap.add_argument("--quick", action="store_true", help="1 repeat, fewer calls (about a minute)")
    ap.add_argument("--name", default=None, help="results file name (default: timestamp[-quick])")
    ap.add_argument(
        "--systems", default="direct,raw_proxy,gateway", help="comma list of direct, raw_proxy, gateway (default: all)"
    )
    ap.add_argument("--concurrency", default="1,8,64", help="comma list (default 1,8,64)")
    ap.add_argument("--payloads", default="echo,blob10k", help="comma list of echo, blob10k, mixed10k, blob1m")
    ap.add_argument("--eras", default="session", help="comma list of session, 2026 (default session)")
    ap.add_argument("--repeats", type=int, default=None, help="repeats per cell (default 3, --quick 1)")
    ap.add_argument("--calls-scale", type=float, default=1.0, help="multiply the per-cell call counts")
    ap.add_argument(
        "--durability",
        default="",
        help="comma list of gateway recording.durability values to run as separate gateway systems "
        "(e.g. commit,async); default: one gateway with the config's default",
    )
    ap.add_argument(
        "--masking",
        default="",
        help="comma list of on, off: run the gateway with masking on and/or off as separate systems (A/B of the "
        "mask stage's cost); default: one gateway with the config's default (on)",
    )
    ap.add_argument("--sse", action="store_true", help="upstream answers with SSE instead of JSON")
    ap.add_argument("--settle", type=float, default=0.3, help="seconds after each window before the last CPU sample")
    ap.add_argument("--gateway-timeout", type=float, default=30.0, help="seconds to wait for the gateway's READY")
    ap.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    ap.add_argument("--max-minutes", type=float, default=30.0, help="stop starting new cells after this long")
    ap.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (configs, DBs, logs)")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    quick = args.quick
    repeats = args.repeats or (1 if quick else 3)
    systems_wanted = [s.strip() for s in args.systems.split(",") if s.strip()]
    concs = [int(c) for c in args.concurrency.split(",") if c.strip()]
    tools = [t.strip() for t in args.payloads.split(",") if t.strip()]
    eras = [e.strip() for e in args.eras.split(",") if e.strip()]
    for t in tools:
        if t not in PAYLOAD_LABEL:
            raise SystemExit(f"unknown payload {t!r}")
    started = dt.datetime.now(dt.UTC)
    name = args.name or started.strftime("%Y%m%d-%H%M%S") + ("-quick" if quick else "")

    avail = sorted(os.sched_getaffinity(0))
    if len(avail) >= 2 and not args.no_pin:
        load_cpu, proxy_cpu = avail[0], avail[1]
        pinning = f"loadgen+upstream on CPU {load_cpu}, proxy under test on CPU {proxy_cpu}"
    else:
        load_cpu = proxy_cpu = None
        pinning = "none" + (" (fewer than 2 CPUs)" if len(avail) < 2 else " (--no-pin)")

    def calls_for(conc: int, tool: str) -> int:
        base = {1: 2000, 8: 5000}.get(conc, 6000) if not quick else {1: 1000, 8: 2500}.get(conc, 3000)
        if tool == "blob1m":
            base //= 20
        return max(50, int(base * args.calls_scale))

    def warmup_for(conc: int) -> int:
        return max(200 if not quick else 100, 10 * conc)

    max_seconds = 10.0 if quick else 20.0
    hard_timeout = max_seconds * 3 + 30

    tmp = Path(tempfile.mkdtemp(prefix="portcullis-bench-"))
    procs = Procs(tmp)
    notes: list[str] = []
    runs: list[dict[str, Any]] = []
    systems: list[System] = []
    gw_names: list[str] = []
    meta: dict[str, Any] = {
        "name": name,
        "mode": "quick" if quick else "full",
        "started": started.isoformat(),
        "repeats": repeats,
        "pinning": pinning,
        "settle_s": args.settle,
        "eras": eras,
        "concurrency": concs,
        "payloads": tools,
        "upstream_sse": args.sse,
        "machine": machine_info(),
    }

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    old_term = signal.signal(signal.SIGTERM, on_term)
    old_int = signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with SIGINT ignored
    interrupted = False
    t_start = time.monotonic()
    try:
        if load_cpu is not None:
            os.sched_setaffinity(0, {load_cpu})
        # Upstream
        up_cmd = [PY, str(BENCH / "upstream_fast.py"), "--port", "0"] + (["--sse"] if args.sse else [])
        up = procs.start("upstream", up_cmd, load_cpu)
        ready = procs.wait_ready("upstream", 20)
        if ready is None:
            raise RuntimeError(f"upstream did not start:\n{procs.log_tail('upstream')}")
        upstream_url = ready.split()[-1]
        log(f"upstream: {upstream_url} (pid {up.pid})")
        if "direct" in systems_wanted:
            systems.append(System("direct", upstream_url, None))
        if "raw_proxy" in systems_wanted:
            rp = procs.start(
                "raw_proxy", [PY, str(BENCH / "raw_proxy.py"), "--upstream", upstream_url, "--port", "0"], proxy_cpu
            )
            ready = procs.wait_ready("raw_proxy", 20)
            if ready is None:
                raise RuntimeError(f"raw_proxy did not start:\n{procs.log_tail('raw_proxy')}")
            systems.append(System("raw_proxy", ready.split()[-1], rp.pid))
            log(f"raw_proxy: {systems[-1].url} (pid {rp.pid})")
        if "gateway" in systems_wanted:
            durabilities = [d.strip() for d in args.durability.split(",") if d.strip()] or [None]
            maskings = [m.strip() for m in args.masking.split(",") if m.strip()] or [None]
            for d in durabilities:
                for mk in maskings:
                    tags = [t for t in (d, None if mk is None else f"mask-{mk}") if t]
                    gname = "gateway" if not tags else f"gateway[{','.join(tags)}]"
                    sysobj, msg = start_gateway(
                        procs, gname, tmp, upstream_url, proxy_cpu, d, args.gateway_timeout, masking=mk
                    )
                    if sysobj is None:
                        note = f"{gname} skipped: {msg}"
                        notes.append(note.splitlines()[0])
                        meta.setdefault("gateway_skipped", {})[gname] = msg
                        log("SKIP " + note)
                    else:
                        systems.append(sysobj)
                        gw_names.append(gname)
                        log(f"{gname}: {sysobj.url} (pid {sysobj.proxy_pid}); ready line: {msg}")

        # Smoke check each system; a broken one is reported and dropped, the rest go on.
        for s in list(systems):
            for era in eras:
                res = run_loadgen(
                    procs,
                    s,
                    up.pid,
                    conc=1,
                    tool="echo",
                    era=era,
                    calls=20,
                    warmup=5,
                    max_seconds=10,
                    hard_timeout=30,
                    settle=0,
                    cpu=load_cpu,
                    tag=f"smoke-{s.name}",
                )
                if res.get("errors") or res.get("aborted") or not res.get("ok"):
                    detail = res.get("error_samples") or res.get("setup_error_samples") or [res.get("abort_reason")]
                    msg = f"{s.name} failed the smoke check ({era} era): {detail}"
                    log("SKIP " + msg)
                    notes.append(msg)
                    systems.remove(s)
                    break
        if not systems:
            raise RuntimeError("no system passed the smoke check")

        # Idle CPU of each proxy (background work such as flushers or timers shows up here).
        for s in systems:
            if s.proxy_pid is not None:
                s.idle_cpu_pct = idle_cpu_pct(s.proxy_pid, 1.0 if quick else 2.0)
        meta["idle_cpu_pct"] = {s.name: s.idle_cpu_pct for s in systems if s.proxy_pid is not None}

        total = repeats * len(eras) * len(tools) * len(concs) * len(systems)
        i = 0
        for rep in range(repeats):
            for era in eras:
                for tool in tools:
                    for conc in concs:
                        for s in systems:
                            if time.monotonic() - t_start > args.max_minutes * 60:
                                raise TimeoutError(f"--max-minutes {args.max_minutes} reached")
                            i += 1
                            res = run_loadgen(
                                procs,
                                s,
                                up.pid,
                                conc=conc,
                                tool=tool,
                                era=era,
                                calls=calls_for(conc, tool),
                                warmup=warmup_for(conc),
                                max_seconds=max_seconds,
                                hard_timeout=hard_timeout,
                                settle=args.settle,
                                cpu=load_cpu,
                                tag=f"{s.name}-{i}",
                            )
                            runs.append(
                                {
                                    "repeat": rep,
                                    "era": era,
                                    "tool": tool,
                                    "concurrency": conc,
                                    "system": s.name,
                                    "result": res,
                                }
                            )
                            pcpu = (res.get("cpu") or {}).get("proxy", {}).get("cpu_us_per_call")
                            log(
                                f"[{i}/{total}] {s.name:>14} {era:>7} {PAYLOAD_LABEL[tool]:>6} c={conc:<3} "
                                f"req/s={fmt(res.get('req_s'), 0):>6} p50={fmt(res.get('p50_ms'), 3)} "
                                f"p99={fmt(res.get('p99_ms'), 3)} err={res.get('errors')} "
                                f"cpu/call={fmt(pcpu, 0)}µs loadgen={fmt(res.get('loadgen_cpu_util'), 2)}"
                                + (" ABORTED" if res.get("aborted") else "")
                            )
                            # Dead process under test: stop measuring it.
                            if s.proxy_pid is not None and not Path(f"/proc/{s.proxy_pid}").exists():
                                notes.append(f"{s.name} died during the run")
                                raise RuntimeError(f"{s.name} died:\n" + procs.log_tail(s.name))
    except KeyboardInterrupt:
        interrupted = True
        notes.append("interrupted: partial results")
        log("interrupted; stopping children")
    except (RuntimeError, TimeoutError) as exc:
        notes.append(f"run stopped early: {str(exc).splitlines()[0]}")
        log(f"ERROR: {exc}")
    finally:
        procs.stop_all()
        signal.signal(signal.SIGTERM, old_term)
        signal.signal(signal.SIGINT, old_int)

    for g in gw_names:
        counts = store_counts(tmp / f"{g}.db")
        sent = sum(
            int(r["result"].get("count") or 0) + int(r["result"].get("warmup") or 0) for r in runs if r["system"] == g
        )
        meta.setdefault("gateway_store", {})[g] = {"tools_call_sent": sent, "rows": counts}
        if isinstance(counts, dict):
            notes.append(
                f"{g} store after the run: "
                + ", ".join(f"{t} {n}" for t, n in counts.items())
                + f" rows, for {sent} measured + warm-up tools/call (plus smoke checks and session set-up)"
            )
        else:
            notes.append(f"{g} store: {counts}")
    meta["duration_s"] = round(time.monotonic() - t_start, 1)
    meta["systems"] = {s.name: s.url for s in systems}
    rows = summarise(runs, [s.name for s in systems])
    verdicts = verdicts_for(rows, gw_names)
    for g in gw_names:
        parts = []
        for r in rows:
            sp = r.get("proxy_us_per_call_split") or {}
            if r["system"] == g and sp.get("main_thread") is not None:
                parts.append(
                    f"{r['payload']} c={r['concurrency']}: main {sp['main_thread']:.0f}, "
                    f"threads {sp['other_threads'] or 0:.0f}, children {sp['child_processes'] or 0:.0f}"
                )
        if parts:
            notes.append(f"{g} CPU µs per call by thread (schedstat): " + "; ".join(parts))
    for s in systems:
        if s.idle_cpu_pct is not None and s.idle_cpu_pct > 1.0:
            notes.append(f"{s.name} uses {s.idle_cpu_pct:.1f} % CPU while idle")
    for r in rows:
        a, b = r.get("cpu_us_per_call"), r.get("cpu_us_per_call_schedstat")
        if a and b and abs(a - b) / max(a, b) > 0.2 and abs(a - b) > 10:
            notes.append(
                f"{r['system']} {r['payload']} c={r['concurrency']}: /proc stat CPU {a:.0f} µs vs "
                f"schedstat {b:.0f} µs per call (short window or exited threads)"
            )
    md = markdown(rows, meta, verdicts, notes)
    results_dir = BENCH / "results"
    results_dir.mkdir(exist_ok=True)
    out_path = results_dir / f"{name}.json"
    out_path.write_text(
        json.dumps(
            {"meta": meta, "summary": rows, "verdicts": verdicts, "notes": notes, "runs": runs, "markdown": md},
            indent=1,
        )
        + "\n"
    )
    print(md)
    print(f"\nresults: {out_path.relative_to(ROOT)}")
    if args.keep_tmp:
        print(f"temp dir kept: {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    if interrupted:
        return 130
    return 0 if runs else 1


if __name__ == "__main__":
    sys.exit(main())
