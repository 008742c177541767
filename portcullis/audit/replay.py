"""Replay a recorded session: as a timeline for people, and against a server to see what answers differently today.

``replay_against`` speaks MCP Streamable HTTP in the session's era: it initializes with the recorded ``initialize``
params (session era) and re-sends each request the client made that the gateway let through, in order. Reads are
replayed (lists, ``resources/read``, ``prompts/get``, ``ping``, ``completion/complete``, and ``tools/call`` of tools
the server's own ``tools/list`` marks ``readOnlyHint``); anything else only with ``force``. Requests the gateway
denied or held at the time are not replayed. Each answer is compared with the recorded one, path by path, ignoring
the JSON-RPC id, ``_meta``, and every path the record marks as masked (the recorded value there is a placeholder).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from portcullis.audit.document import Document

READS = frozenset(
    {
        "ping",
        "tools/list",
        "resources/list",
        "resources/read",
        "resources/templates/list",
        "prompts/list",
        "prompts/get",
        "completion/complete",
        "server/discover",
    }
)
ACCEPT = "application/json, text/event-stream"
STATELESS = ("2026-07-28",)


@dataclass
class Outcome:
    seq: int
    method: str
    target: str | None
    verdict: str  # same, differs, skipped, error
    why: str = ""
    diffs: list[str] = field(default_factory=list)


@dataclass
class Report:
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def differs(self) -> bool:
        return any(o.verdict in ("differs", "error") for o in self.outcomes)

    def to_json(self) -> dict[str, Any]:
        return {"differs": self.differs, "outcomes": [o.__dict__ for o in self.outcomes]}


def _json(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return None


def _target(msg: dict[str, Any]) -> str | None:
    params = msg.get("params") or {}
    if not isinstance(params, dict):
        return None
    for k in ("name", "uri"):
        if isinstance(params.get(k), str):
            return str(params[k])
    return None


def _ts(ns: int) -> str:
    return dt.datetime.fromtimestamp(ns / 1e9, dt.UTC).strftime("%H:%M:%S.%f")[:-3]


def timeline(doc: Document) -> list[str]:
    """The session for people: who, which client, each exchange with latency, decisions, approvals, masking."""
    lines: list[str] = []
    s = doc.session or {}
    recs = doc.records
    init = next((r for r in recs if r["direction"] == "c2s" and r["method"] == "initialize"), None)
    client = (_json(init["payload"]) or {}).get("params", {}).get("clientInfo") if init else None
    who = next((_json(r["principal"]) for r in recs if r.get("principal")), None) or {}
    lines.append(f"session {s.get('id', '?')}  server {s.get('server', '?')}  protocol {s.get('protocol_version')}")
    lines.append(f"who     {who.get('sub', 'anonymous')} {who.get('email') or ''} groups {who.get('groups') or []}")
    if client:
        lines.append(f"client  {client.get('name')} {client.get('version', '')}")
    if s.get("created_ns"):
        ended = _ts(s["ended_ns"]) if s.get("ended_ns") else "open"
        lines.append(f"from    {_ts(s['created_ns'])} to {ended} ({s.get('end_reason') or '-'})")
    if doc.problems:
        lines += [f"INTEGRITY {p}" for p in doc.problems]
    requests = {(r["msg_id"], r["flow_id"]): r for r in recs if r["direction"] == "c2s" and r["kind"] == "request"}
    for r in recs:
        t = _ts(r["ts_ns"])
        if r["direction"] == "gw":
            lines.append(f"{t}  •  {r['kind']:<22} {r.get('detail') or ''}")
            continue
        if r["direction"] == "c2s" and r["kind"] == "request":
            continue  # shown with its answer
        msg = _json(r["payload"]) or {}
        if r["direction"] == "s2c" and r["kind"] in ("result", "error"):
            req = requests.get((r["msg_id"], r["flow_id"]))
            target = _target(_json(req["payload"]) or {}) if req else None
            lat = f"{r['latency_us'] / 1000:.1f} ms" if r.get("latency_us") is not None else ""
            decided = f"  [{r['decision']} by {r['rule']}]" if r.get("decision") else ""
            answer = "error " + str((msg.get("error") or {}).get("message", ""))[:80] if r["kind"] == "error" else "ok"
            lines.append(f"{t}  →  {r['method'] or '?':<22} {target or '':<20} {lat:>9}  {answer}{decided}")
            for m in _json(r.get("masked")) or []:
                lines.append(f"{'':16}masked {m.get('class')} at {m.get('path')}")
        else:
            arrow = "→" if r["direction"] == "c2s" else "←"
            lines.append(f"{t}  {arrow}  {r['method'] or r['kind']:<22}")
    return lines


def diff(old: Any, new: Any, masked: frozenset[str], path: str = "") -> list[str]:
    """Path-level differences (``_meta`` and masked paths are not compared)."""
    if path in masked:
        return []
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for k in sorted(old.keys() | new.keys()):
            if k == "_meta":
                continue
            p = f"{path}.{k}" if path else k
            if k not in new:
                out.append(f"{p}: removed")
            elif k not in old:
                out.append(f"{p}: added {orjson.dumps(new[k]).decode()[:120]}")
            else:
                out += diff(old[k], new[k], masked, p)
        return out
    if isinstance(old, list) and isinstance(new, list):
        out = [f"{path}: {len(old)} items, now {len(new)}"] if len(old) != len(new) else []
        for i, (a, b) in enumerate(zip(old, new, strict=False)):
            out += diff(a, b, masked, f"{path}[{i}]")
        return out
    if old != new:
        return [f"{path}: {orjson.dumps(old).decode()[:120]} -> {orjson.dumps(new).decode()[:120]}"]
    return []


class _Client:
    def __init__(self, http: aiohttp.ClientSession, url: str, version: str | None, headers: dict[str, str]) -> None:
        self.http, self.url = http, url
        self.version = version or "2025-11-25"
        self.h = {"Content-Type": "application/json", "Accept": ACCEPT, **headers}
        self.stateless = self.version in STATELESS
        self.n = 0

    async def send(self, msg: dict[str, Any]) -> dict[str, Any] | None:
        body = dict(msg)
        if self.stateless and "id" in body:
            params = dict(body.get("params") or {})
            meta = dict(params.get("_meta") or {})
            meta.setdefault("io.modelcontextprotocol/protocolVersion", self.version)
            params["_meta"] = meta
            body["params"] = params
        h = dict(self.h)
        if self.stateless:
            h |= {"MCP-Protocol-Version": self.version, "Mcp-Method": str(body.get("method"))}
            target = _target(body)
            if target is not None:
                h["Mcp-Name"] = target
        async with self.http.post(self.url, data=orjson.dumps(body), headers=h) as r:
            raw = await r.read()
            sid = r.headers.get("Mcp-Session-Id")
            if sid and "Mcp-Session-Id" not in self.h:
                self.h |= {"Mcp-Session-Id": sid, "MCP-Protocol-Version": self.version}
            if r.status == 202 or not raw.strip():
                return None
            if r.headers.get("Content-Type", "").startswith("text/event-stream"):
                for line in raw.split(b"\n"):
                    if line.startswith(b"data:") and line[5:].strip():
                        m = orjson.loads(line[5:])
                        if m.get("id") == body.get("id") and ("result" in m or "error" in m):
                            return dict(m)
                return None
            return dict(orjson.loads(raw))


async def replay_against(doc: Document, url: str, force: bool = False, headers: dict[str, str] | None = None) -> Report:
    recs = doc.records
    report = Report()
    answers = {
        (r["msg_id"], r["flow_id"]): r for r in recs if r["direction"] == "s2c" and r["kind"] in ("result", "error")
    }
    sent = [r for r in recs if r["direction"] == "c2s" and r["kind"] == "request"]
    init = next((r for r in sent if r["method"] == "initialize"), None)
    version = (doc.session or {}).get("protocol_version")
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
        c = _Client(http, url, version, headers or {})
        if init is not None and not c.stateless:
            params = (_json(init["payload"]) or {}).get("params") or {}
            await c.send({"jsonrpc": "2.0", "id": "replay-init", "method": "initialize", "params": params})
            await c.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        listed = await c.send({"jsonrpc": "2.0", "id": "replay-tools", "method": "tools/list", "params": {}})
        read_only = {
            t.get("name")
            for t in ((listed or {}).get("result") or {}).get("tools", [])
            if isinstance(t, dict) and (t.get("annotations") or {}).get("readOnlyHint") is True
        }
        for r in sent:
            msg = _json(r["payload"]) or {}
            method = str(msg.get("method") or r["method"])
            target = _target(msg)
            out = Outcome(int(r["seq"]), method, target, "same")
            report.outcomes.append(out)
            if method == "initialize":
                out.verdict, out.why = "skipped", "the session's start (replayed first)"
                continue
            answer = answers.get((r["msg_id"], r["flow_id"]))
            if answer is not None and answer.get("decision") in ("deny", "hold"):
                out.verdict, out.why = (
                    "skipped",
                    f"not replayed: {answer['decision']} by rule {answer.get('rule')} at the time",
                )
                continue
            readable = method in READS or (method == "tools/call" and target in read_only)
            if not readable and not force:
                out.verdict, out.why = "skipped", "not read-only; use --force"
                continue
            try:
                got = await c.send({k: v for k, v in msg.items() if k != "jsonrpc"} | {"jsonrpc": "2.0"})
            except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError) as exc:
                out.verdict, out.why = "error", type(exc).__name__
                continue
            if answer is None:
                out.verdict, out.why = "skipped", "no recorded answer to compare with"
                continue
            recorded = _json(answer["payload"]) or {}
            masked = frozenset(str(m.get("path")) for m in (_json(answer.get("masked")) or []) if isinstance(m, dict))
            a = {k: v for k, v in recorded.items() if k not in ("id", "jsonrpc")}
            b = {k: v for k, v in (got or {}).items() if k not in ("id", "jsonrpc")}
            out.diffs = diff(a, b, masked)
            if out.diffs:
                out.verdict = "differs"
    return report
