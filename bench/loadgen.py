"""Load generator speaking MCP Streamable HTTP (aiohttp + uvloop).

Each of C concurrent workers opens its own MCP session (``initialize`` + ``notifications/initialized``; session era)
or uses the stateless 2026-07-28 form (``--era 2026``: one ``server/discover``, then every request carries
``params._meta`` and the ``MCP-Protocol-Version``/``Mcp-Method``/``Mcp-Name`` headers). Workers then loop
``tools/call`` until a shared ticket counter is exhausted: first ``--warmup`` calls (not recorded), then ``--calls``
measured calls. Per-call latency covers sending the request to having the whole JSON-RPC response parsed.
Both ``application/json`` and ``text/event-stream`` responses are handled.

Bounded: a fixed call count, a soft ``--max-seconds`` on the measured phase (no new calls after it), a per-request
timeout, and a hard ``--hard-timeout`` after which everything is cancelled and partial results are printed (exit 2).

``--watch NAME=PID`` (repeatable) samples that process's CPU (utime+stime of it and all its descendants, from
/proc/PID/stat, plus a ns-precise sum of /proc/*/task/*/schedstat) right before the measured window and
``--settle`` seconds after it, and reports CPU microseconds per measured call. The loadgen's own CPU utilisation over
the window is reported too, so a caller can tell whether the loadgen was the bottleneck.

Output: one JSON object on stdout (req_s, p50_ms, p90_ms, p99_ms, errors, count, ...).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import resource
import sys
import time
from typing import Any

import aiohttp
import orjson

SESSION_VERSION = "2025-11-25"
V2026 = "2026-07-28"
META_VERSION = "io.modelcontextprotocol/protocolVersion"
CLIENT_INFO = {"name": "portcullis-bench-loadgen", "version": "1.0.0"}
ACCEPT = "application/json, text/event-stream"
EXPECTED_TEXT_LEN = {"blob10k": 10_000, "blob1m": 1_048_576}
ECHO_TEXT = "hello portcullis"

CLK_TCK = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------------------------------------------------
# /proc CPU accounting
# ---------------------------------------------------------------------------------------------------------------
def _read_stat(pid: int) -> tuple[int, int, int] | None:
    """(ppid, utime+stime ticks, cutime+cstime ticks) of one process, or None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    rest = data[data.rindex(b")") + 2 :].split()
    # rest[0] is field 3 (state); field N is rest[N-3]
    ppid = int(rest[1])
    own = int(rest[11]) + int(rest[12])  # utime, stime (fields 14, 15)
    reaped = int(rest[13]) + int(rest[14])  # cutime, cstime (fields 16, 17)
    return ppid, own, reaped


def descendants(root: int) -> list[int]:
    """root and all its live descendants."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        st = _read_stat(int(name))
        if st is not None:
            children.setdefault(st[0], []).append(int(name))
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, ()))
    return out


def _sched_ns(pid: int) -> tuple[int, int]:
    """(ns on CPU of the process's main thread, ns of its other live threads), from schedstat."""
    main = other = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0, 0
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat", "rb") as f:
                ns = int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            continue
        if int(tid) == pid:
            main += ns
        else:
            other += ns
    return main, other


def cpu_snapshot(root: int) -> dict[str, Any]:
    """CPU consumed so far by root and its descendants: ticks (stat; incl. reaped children) and ns (schedstat:
    live threads only; split into the root's main thread, the root's other threads, and descendant processes)."""
    pids = descendants(root)
    ticks = 0
    ns = {"main_thread": 0, "other_threads": 0, "child_processes": 0}
    for p in pids:
        st = _read_stat(p)
        if st is None:
            continue
        ticks += st[1] + st[2]  # own + reaped children (a live process's reaped children appear nowhere else)
        main, other = _sched_ns(p)
        if p == root:
            ns["main_thread"] += main
            ns["other_threads"] += other
        else:
            ns["child_processes"] += main + other
    return {"ticks": ticks, "ns": sum(ns.values()), "split": ns, "pids": len(pids), "t": time.perf_counter()}


def cpu_delta(a: dict[str, Any], b: dict[str, Any], calls: int, wall: float) -> dict[str, Any]:
    """CPU between two snapshots; utilisation is over wall (the measured window, without the settle time)."""
    cpu_s = (b["ticks"] - a["ticks"]) / CLK_TCK
    cpu_ns_s = (b["ns"] - a["ns"]) / 1e9
    split = {k: round((b["split"][k] - a["split"].get(k, 0)) / 1e3 / calls, 1) if calls else None for k in b["split"]}
    return {
        "cpu_s": round(cpu_s, 4),
        "cpu_us_per_call": round(cpu_s * 1e6 / calls, 1) if calls else None,
        "cpu_s_schedstat": round(cpu_ns_s, 4),
        "cpu_us_per_call_schedstat": round(cpu_ns_s * 1e6 / calls, 1) if calls else None,
        "us_per_call_split": split,
        "utilisation": round(cpu_ns_s / wall, 3) if wall > 0 else None,
        "pids": b["pids"],
    }


def machine_busy_s() -> float | None:
    """Busy CPU seconds of the whole machine so far (all CPUs: /proc/stat minus idle and iowait)."""
    try:
        with open("/proc/stat", "rb") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    # user nice system idle iowait irq softirq steal guest guest_nice; guest time is already in user
    busy = sum(fields[:8]) - fields[3] - fields[4]
    return busy / CLK_TCK


# ---------------------------------------------------------------------------------------------------------------
# MCP client bits
# ---------------------------------------------------------------------------------------------------------------
class CallError(Exception):
    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind


async def read_message(resp: aiohttp.ClientResponse, rid: int | str) -> dict[str, Any]:
    """The JSON-RPC response with id rid, from a JSON or SSE response body."""
    ctype = resp.headers.get("Content-Type", "")
    if ctype.startswith("application/json"):
        msg = orjson.loads(await resp.read())
        if not isinstance(msg, dict) or msg.get("id") != rid:
            raise CallError("bad-response", "JSON body is not the response to our request")
        return msg
    if ctype.startswith("text/event-stream"):
        msg = await read_sse_response(resp, rid)
        if msg is None:
            raise CallError("bad-response", "SSE stream ended without the response")
        return msg
    raise CallError("bad-content-type", ctype or "(none)")


async def read_sse_response(resp: aiohttp.ClientResponse, rid: int | str) -> dict[str, Any] | None:
    """Parse an SSE body as it arrives; return the JSON-RPC response with id rid (skipping notifications and
    server->client requests that may precede it), or None if the stream ends without it. Lines of any length."""
    buf = b""
    scan = 0  # where to look for the next newline in buf
    data: list[bytes] = []
    eof = False
    it = resp.content.iter_any().__aiter__()
    while True:
        nl = buf.find(b"\n", scan)
        if nl < 0:
            if eof:
                if not buf and not data:
                    return None
                nl = len(buf)  # a last line without newline, then dispatch below
                buf += b"\n"
            else:
                scan = len(buf)
                try:
                    buf += await it.__anext__()
                except StopAsyncIteration:
                    eof = True
                continue
        line = buf[:nl]
        buf = buf[nl + 1 :]
        scan = 0
        if line.endswith(b"\r"):
            line = line[:-1]
        if line:
            if line.startswith(b"data:"):
                d = line[5:]
                data.append(d[1:] if d[:1] == b" " else d)
            if not (eof and not buf):
                continue
        if not data:  # an event without data (comment, retry, ...) or a stray blank line
            if eof and not buf:
                return None
            continue
        payload = b"\n".join(data)
        data = []
        msg = orjson.loads(payload)
        if isinstance(msg, dict) and "method" not in msg and msg.get("id") == rid:
            return msg


class Worker:
    def __init__(self, lg: LoadGen, idx: int) -> None:
        self.lg = lg
        self.idx = idx
        self.sid: str | None = None
        self.next_id = 0
        self.base_headers = {"Content-Type": "application/json", "Accept": ACCEPT}

    def _id(self) -> int:
        self.next_id += 1
        return self.next_id

    async def post(
        self, body: dict[str, Any], extra: dict[str, str] | None = None, expect_body: bool = True
    ) -> tuple[aiohttp.ClientResponse, dict[str, Any] | None]:
        headers = dict(self.base_headers)
        if extra:
            headers.update(extra)
        async with self.lg.http.post(self.lg.url, data=orjson.dumps(body), headers=headers) as resp:
            if not expect_body:
                await resp.read()
                if resp.status != 202:
                    raise CallError(f"http-{resp.status}", "notification not accepted with 202")
                return resp, None
            if resp.status != 200:
                text = (await resp.read())[:200].decode("utf-8", "replace")
                raise CallError(f"http-{resp.status}", text)
            msg = await read_message(resp, body["id"])
            return resp, msg

    async def setup(self) -> None:
        lg = self.lg
        if lg.era == "2026":
            rid = self._id()
            body = {"jsonrpc": "2.0", "id": rid, "method": "server/discover", "params": {"_meta": lg.meta_2026}}
            _, msg = await self.post(body, {"MCP-Protocol-Version": V2026, "Mcp-Method": "server/discover"})
            assert msg is not None
            if "result" not in msg:
                raise CallError("discover-failed", str(msg.get("error")))
            versions = msg["result"].get("supportedVersions") or []
            if V2026 not in versions:
                raise CallError("discover-failed", f"server does not support {V2026}: {versions}")
            self.base_headers.update({"MCP-Protocol-Version": V2026, "Mcp-Method": "tools/call", "Mcp-Name": lg.tool})
            return
        rid = self._id()
        body = {
            "jsonrpc": "2.0",
            "id": rid,
            "method": "initialize",
            "params": {"protocolVersion": SESSION_VERSION, "capabilities": {}, "clientInfo": CLIENT_INFO},
        }
        resp, msg = await self.post(body)
        assert msg is not None
        if "result" not in msg:
            raise CallError("initialize-failed", str(msg.get("error")))
        version = msg["result"].get("protocolVersion", SESSION_VERSION)
        self.sid = resp.headers.get("Mcp-Session-Id")
        if self.sid:
            self.base_headers["Mcp-Session-Id"] = self.sid
        self.base_headers["MCP-Protocol-Version"] = version
        await self.post({"jsonrpc": "2.0", "method": "notifications/initialized"}, expect_body=False)

    async def teardown(self) -> None:
        if self.sid is None:
            return
        with contextlib.suppress(Exception):
            async with self.lg.http.delete(
                self.lg.url, headers=self.base_headers, timeout=aiohttp.ClientTimeout(total=2)
            ) as resp:
                await resp.read()

    async def call(self) -> None:
        lg = self.lg
        rid = self._id()
        params: dict[str, Any] = {"name": lg.tool, "arguments": lg.arguments}
        if lg.era == "2026":
            params["_meta"] = lg.meta_2026
        _, msg = await self.post({"jsonrpc": "2.0", "id": rid, "method": "tools/call", "params": params})
        assert msg is not None
        result = msg.get("result")
        if not isinstance(result, dict):
            err = msg.get("error") or {}
            raise CallError(f"jsonrpc-{err.get('code')}", str(err.get("message"))[:200])
        if result.get("isError"):
            raise CallError("tool-error", str(result.get("content"))[:200])
        if lg.check:
            content = result.get("content")
            text = content[0].get("text") if isinstance(content, list) and content else None
            if not isinstance(text, str):
                raise CallError("bad-result", "no text content")
            want = EXPECTED_TEXT_LEN.get(lg.tool)
            if (want is not None and len(text) != want) or (lg.tool == "echo" and text != ECHO_TEXT):
                raise CallError("bad-result", f"unexpected text of length {len(text)}")

    async def run_phase(self, phase: Phase) -> None:
        lg = self.lg
        while phase.take():
            t0 = time.perf_counter_ns()
            try:
                await self.call()  # bounded by the session's per-request total timeout
            except TimeoutError:
                phase.error("timeout", f"no response within {lg.request_timeout}s")
            except CallError as exc:
                phase.error(exc.kind, str(exc))
            except Exception as exc:  # any failure of one call is an error of that call, not of the run
                phase.error(type(exc).__name__, str(exc)[:200])
            else:
                if phase.record:
                    phase.latencies.append(time.perf_counter_ns() - t0)


class Phase:
    def __init__(self, calls: int, deadline: float | None, record: bool) -> None:
        self.left = calls
        self.deadline = deadline
        self.record = record
        self.started = 0
        self.latencies: list[int] = []
        self.errors: dict[str, int] = {}
        self.error_samples: list[str] = []

    def take(self) -> bool:
        if self.left <= 0:
            return False
        if self.deadline is not None and time.perf_counter() >= self.deadline:
            return False
        self.left -= 1
        self.started += 1
        return True

    def error(self, kind: str, detail: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1
        if len(self.error_samples) < 5:
            self.error_samples.append(detail)


def percentile(sorted_ns: list[int], q: float) -> float | None:
    """Nearest-rank percentile, in milliseconds."""
    if not sorted_ns:
        return None
    k = max(0, min(len(sorted_ns) - 1, math.ceil(q / 100.0 * len(sorted_ns)) - 1))
    return round(sorted_ns[k] / 1e6, 4)


class LoadGen:
    def __init__(self, args: argparse.Namespace) -> None:
        self.url: str = args.url
        self.concurrency: int = args.concurrency
        self.calls: int = args.calls
        self.warmup: int = args.warmup if args.warmup is not None else max(100, 10 * args.concurrency)
        self.tool: str = args.tool
        self.era: str = args.era
        self.max_seconds: float = args.max_seconds
        self.request_timeout: float = args.request_timeout
        self.settle: float = args.settle
        self.check: bool = not args.no_check
        self.watch: dict[str, int] = {}
        for w in args.watch:
            name, _, pid = w.partition("=")
            self.watch[name] = int(pid)
        self.arguments: dict[str, Any] = {"text": ECHO_TEXT} if self.tool == "echo" else {}
        self.meta_2026 = {
            META_VERSION: V2026,
            "io.modelcontextprotocol/clientInfo": CLIENT_INFO,
            "io.modelcontextprotocol/clientCapabilities": {},
        }
        self.http: aiohttp.ClientSession  # set in run()
        self.result: dict[str, Any] = {
            "url": self.url,
            "concurrency": self.concurrency,
            "tool": self.tool,
            "era": self.era,
            "calls_requested": self.calls,
            "warmup": self.warmup,
            "aborted": False,
        }

    async def run(self) -> dict[str, Any]:
        conn = aiohttp.TCPConnector(limit=0, keepalive_timeout=60)
        async with aiohttp.ClientSession(
            connector=conn,
            auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=self.request_timeout, sock_connect=10),
            skip_auto_headers=("User-Agent",),
        ) as http:
            self.http = http
            workers = [Worker(self, i) for i in range(self.concurrency)]
            try:
                # Sessions (bounded by the request timeout each).
                setup = await asyncio.gather(
                    *(asyncio.wait_for(w.setup(), self.request_timeout) for w in workers), return_exceptions=True
                )
                failed = [repr(e) for e in setup if isinstance(e, BaseException)]
                if failed:
                    self.result.update(setup_failures=len(failed), setup_error_samples=failed[:5])
                    self.result["errors"] = len(failed)
                    self.result["count"] = 0
                    return self.result
                # Warm-up (not recorded).
                warm = Phase(self.warmup, time.perf_counter() + max(5.0, self.max_seconds / 2), record=False)
                await asyncio.gather(*(w.run_phase(warm) for w in workers))
                self.result["warmup_errors"] = sum(warm.errors.values())
                # Measured window.
                phase = Phase(self.calls, None, record=True)
                before = {n: cpu_snapshot(p) for n, p in self.watch.items()}
                busy0 = machine_busy_s()
                ru0 = resource.getrusage(resource.RUSAGE_SELF)
                t0 = time.perf_counter()
                phase.deadline = t0 + self.max_seconds
                self.phase = phase
                await asyncio.gather(*(w.run_phase(phase) for w in workers))
                wall = time.perf_counter() - t0
                ru1 = resource.getrusage(resource.RUSAGE_SELF)
                busy1 = machine_busy_s()
                at_end = {n: cpu_snapshot(p) for n, p in self.watch.items()}
                if self.settle > 0:
                    await asyncio.sleep(self.settle)
                after = {n: cpu_snapshot(p) for n, p in self.watch.items()}
                self._summarise(phase, wall, ru0, ru1)
                self.result["cpu"] = {n: cpu_delta(before[n], after[n], phase.started, wall) for n in self.watch}
                self.result["settle_s"] = self.settle
                # CPU used on this machine during the window by processes other than loadgen and the watched ones
                # (other people's work on a shared machine), in cores.
                if busy0 is not None and busy1 is not None and wall > 0:
                    ours = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
                    ours += sum((at_end[n]["ns"] - before[n]["ns"]) / 1e9 for n in self.watch)
                    self.result["machine_busy_cores"] = round((busy1 - busy0) / wall, 3)
                    self.result["foreign_cores"] = round(max(0.0, (busy1 - busy0) - ours) / wall, 3)
            finally:
                await asyncio.gather(*(asyncio.wait_for(w.teardown(), 3) for w in workers), return_exceptions=True)
        return self.result

    def _summarise(self, phase: Phase, wall: float, ru0: Any, ru1: Any) -> None:
        lat = sorted(phase.latencies)
        own_cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
        n_err = sum(phase.errors.values())
        self.result.update(
            count=phase.started,
            ok=len(lat),
            errors=n_err,
            error_kinds=phase.errors,
            error_samples=phase.error_samples,
            wall_s=round(wall, 4),
            req_s=round(phase.started / wall, 1) if wall > 0 else None,
            mean_ms=round(sum(lat) / len(lat) / 1e6, 4) if lat else None,
            min_ms=round(lat[0] / 1e6, 4) if lat else None,
            p50_ms=percentile(lat, 50),
            p90_ms=percentile(lat, 90),
            p99_ms=percentile(lat, 99),
            max_ms=round(lat[-1] / 1e6, 4) if lat else None,
            truncated_by_time=phase.started < self.calls,
            loadgen_cpu_s=round(own_cpu, 4),
            loadgen_cpu_util=round(own_cpu / wall, 3) if wall > 0 else None,
        )


async def amain(args: argparse.Namespace) -> int:
    lg = LoadGen(args)
    try:
        async with asyncio.timeout(args.hard_timeout):
            result = await lg.run()
    except TimeoutError:
        result = lg.result
        result["aborted"] = True
        result["abort_reason"] = f"hard timeout {args.hard_timeout}s"
        phase = getattr(lg, "phase", None)
        if phase is not None:
            result.setdefault("count", phase.started)
            result.setdefault("errors", sum(phase.errors.values()))
            result.setdefault("error_kinds", phase.errors)
        sys.stdout.write(orjson.dumps(result).decode() + "\n")
        return 2
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
    return 0 if not result.get("setup_failures") else 3


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", required=True, help="MCP endpoint URL")
    ap.add_argument("-c", "--concurrency", type=int, default=1)
    ap.add_argument("-n", "--calls", type=int, default=2000, help="measured tools/call count (total, all workers)")
    ap.add_argument("--warmup", type=int, default=None, help="warm-up calls (default max(100, 10*C))")
    ap.add_argument("--tool", default="echo", choices=["echo", "blob10k", "mixed10k", "blob1m"])
    ap.add_argument("--era", default="session", choices=["session", "2026"])
    ap.add_argument("--max-seconds", type=float, default=30.0, help="no new measured calls after this long")
    ap.add_argument("--hard-timeout", type=float, default=120.0, help="abort everything after this long")
    ap.add_argument("--request-timeout", type=float, default=10.0)
    ap.add_argument(
        "--settle",
        type=float,
        default=0.3,
        help="seconds to wait after the window before the final CPU sample of watched processes",
    )
    ap.add_argument(
        "--watch",
        action="append",
        default=[],
        metavar="NAME=PID",
        help="report CPU per call of this process and its descendants (repeatable)",
    )
    ap.add_argument("--no-check", action="store_true", help="do not check tool results")
    ap.add_argument("--cpu", type=int, default=None, help="pin this process to that CPU")
    args = ap.parse_args(argv)
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.run(amain(args))
    return uvloop.run(amain(args))


if __name__ == "__main__":
    sys.exit(main())
