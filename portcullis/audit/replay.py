"""Replay a recorded session: as a timeline for people, and against a server to see what it answers differently today.

:func:`timeline` pairs each client request with its answer (latency, outcome, the policy decision and its rule, the
approval that held or released it, which classes were masked at which paths) between the notifications and the
gateway's own events; :func:`render` writes it as text under a header (who, which client, which server and era).

:func:`replay_against` speaks MCP Streamable HTTP to a server in the era of the recording. Session era: ``initialize``
with the recorded params (protocol version, capabilities, client info), ``notifications/initialized``, the server's
``Mcp-Session-Id`` and the negotiated ``MCP-Protocol-Version`` on every later request, and ``DELETE`` at the end.
2026-07-28: stateless requests, each with the recorded ``_meta`` envelope and the ``MCP-Protocol-Version``,
``Mcp-Method`` and ``Mcp-Name`` headers. Answers may be JSON or an SSE stream (read event by event until the answer).

It re-sends, in order, each request the client made that reached the server at the time. Reads are replayed (the
methods in :data:`READS`, and ``tools/call`` of tools the server's own ``tools/list`` marks ``readOnlyHint: true``);
anything else only with ``force``; requests the gateway answered itself (denied, held, failed) never. Each answer
is compared with the recorded one by :func:`compare`: path by path, ignoring the JSON-RPC id, every ``_meta`` and
every path the record marks as masked (the recorded value there is a placeholder).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import aiohttp
import orjson

from portcullis.audit.document import Document
from portcullis.wire.sse import SSEParseError, SSEParser

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
STATELESS_VERSIONS = frozenset({"2026-07-28"})
VERSION_KEY = "io.modelcontextprotocol/protocolVersion"
CLIENT_INFO_KEY = "io.modelcontextprotocol/clientInfo"
NAMED = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}  # what goes into Mcp-Name
ACCEPT = "application/json, text/event-stream"
MAX_LIST_PAGES = 100


def _json(text: Any) -> Any:
    if not isinstance(text, str):
        return None
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return None


def _obj(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def target_of(msg: dict[str, Any]) -> str | None:
    """What a request is about: the tool or prompt name, the resource URI, a completion's reference."""
    params = _obj(msg.get("params"))
    for k in ("name", "uri"):
        if isinstance(params.get(k), str):
            return str(params[k])
    ref = _obj(params.get("ref"))
    for k in ("name", "uri"):
        if isinstance(ref.get(k), str):
            return str(ref[k])
    return None


def _key(r: dict[str, Any]) -> tuple[int, Any]:
    return (r["flow_id"], r.get("msg_id"))


# --- the timeline ----------------------------------------------------------------------------------------------


@dataclass
class Header:
    session_id: str | None
    server: str | None
    era: str | None
    protocol_version: str | None
    principal: dict[str, Any] | None
    client: dict[str, Any] | None  # clientInfo: name, version, ...
    started_ns: int | None
    ended_ns: int | None
    end_reason: str | None


@dataclass
class Entry:
    """One line of the timeline. ``what``: exchange (a client request and its answer), notification, server-request
    (sampling, elicitation, roots, with the client's answer), response (an answer without its request), event (the
    gateway's own: session open/close, approvals, faults)."""

    seq: int
    ts_ns: int
    what: str
    direction: str
    method: str | None = None
    target: str | None = None
    msg_id: str | None = None
    latency_us: int | None = None
    outcome: str | None = None  # ok, error, denied, failed, upstream_failed; None: no answer recorded
    answer: str | None = None  # "ok", "tool error", "error CODE message"
    decision: str | None = None
    rule: str | None = None
    approval: str | None = None  # held / released by which approval request
    masked: list[str] = field(default_factory=list)  # class@path
    sealed: bool = False
    detail: str | None = None


def session_era(doc: Document) -> tuple[str, str | None]:
    """(era, protocol version) of the recording: from the sessions row, else from the requests' ``_meta``."""
    s = doc.session or {}
    if s.get("era"):
        return str(s["era"]), s.get("protocol_version")
    for r in doc.records:
        if r["direction"] == "c2s" and r["kind"] == "request":
            meta = _obj(_obj(_obj(_json(r.get("payload"))).get("params")).get("_meta"))
            if isinstance(meta.get(VERSION_KEY), str):
                return "stateless", str(meta[VERSION_KEY])
    return "session", s.get("protocol_version")


def header(doc: Document) -> Header:
    s = doc.session or {}
    client: dict[str, Any] | None = None
    for r in doc.records:
        if r["direction"] != "c2s" or r["kind"] != "request":
            continue
        params = _obj(_obj(_json(r.get("payload"))).get("params"))
        if r.get("method") == "initialize" and isinstance(params.get("clientInfo"), dict):
            client = params["clientInfo"]
            break
        info = _obj(params.get("_meta")).get(CLIENT_INFO_KEY)
        if isinstance(info, dict):
            client = info
            break
    if client is None and isinstance(_json(s.get("client_info")), dict):
        client = _json(s.get("client_info"))
    principal = next((p for r in doc.records if isinstance(p := _json(r.get("principal")), dict)), None)
    era, version = session_era(doc)
    first = doc.records[0] if doc.records else {}
    return Header(
        s.get("id") or first.get("session_id"),
        s.get("server") or first.get("server"),
        era,
        version,
        principal,
        client,
        s.get("created_ns") or first.get("ts_ns"),
        s.get("ended_ns"),
        s.get("end_reason"),
    )


def _answer_text(msg: dict[str, Any], kind: str) -> str:
    if kind == "error" or "error" in msg:
        err = _obj(msg.get("error"))
        return f"error {err.get('code')} {str(err.get('message', ''))[:100]}"
    return "tool error" if _obj(msg.get("result")).get("isError") is True else "ok"


def _masked(r: dict[str, Any]) -> list[str]:
    return [f"{m.get('class')}@{m.get('path')}" for m in (_json(r.get("masked")) or []) if isinstance(m, dict)]


def timeline(doc: Document) -> list[Entry]:
    """The session's entries in order: each request at its time, with its answer folded in."""
    out: list[Entry] = []
    open_requests: dict[tuple[int, Any], Entry] = {}  # client requests and server->client requests by flow, id
    for r in doc.records:
        d, kind = r["direction"], r["kind"]
        msg = _obj(_json(r.get("payload")))
        base: dict[str, Any] = {"seq": r["seq"], "ts_ns": r["ts_ns"], "direction": d}
        method = r.get("method")
        if d == "gw":
            out.append(Entry(**base, what="event", method=kind, detail=r.get("detail")))
            continue
        if kind == "request":
            note = r.get("detail")
            e = Entry(
                **base,
                method=method,
                what="exchange" if d == "c2s" else "server-request",
                target=target_of(msg),
                msg_id=r.get("msg_id"),
                approval=note if note and "approval" in note else None,
                detail=note if note and "approval" not in note else None,
                decision=r.get("decision"),
                rule=r.get("rule"),
            )
            out.append(e)
            open_requests[_key(r)] = e
            continue
        if kind in ("result", "error"):
            found = open_requests.pop(_key(r), None)
            if found is None:
                found = Entry(**base, what="response", method=method, msg_id=r.get("msg_id"))
                out.append(found)
            e = found
            e.latency_us = r.get("latency_us")
            e.outcome = r.get("outcome") or ("error" if kind == "error" else "ok")
            e.answer = _answer_text(msg, kind)
            e.decision = r.get("decision") or e.decision
            e.rule = r.get("rule") or e.rule
            why = r.get("detail")
            if why and e.what == "exchange" and r.get("outcome") not in (None, "ok") and why not in e.answer:
                e.detail = why
            e.masked += _masked(r)
            e.sealed = e.sealed or r.get("sealed_b64") is not None
            continue
        out.append(
            Entry(**base, what="notification", method=method, masked=_masked(r), sealed=r.get("sealed_b64") is not None)
        )  # notifications (and whatever else a message may be)
    return out


def _ts(ns: int | None, full: bool = False) -> str:
    if ns is None:
        return "-"
    t = dt.datetime.fromtimestamp(ns / 1e9, dt.UTC)
    return (t.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z") if full else t.strftime("%H:%M:%S.%f")[:-3]


def render(doc: Document, entries: Iterable[Entry] | None = None) -> list[str]:
    """The timeline as text: the header, then one line per entry (masked fields and approvals on their own)."""
    h = header(doc)
    p = h.principal or {}
    lines = [f"session  {h.session_id or '-'}   server {h.server or '-'}   era {h.era} {h.protocol_version or ''}"]
    who = p.get("sub") or "anonymous"
    extra = " ".join(x for x in (p.get("email") or "", f"({p['kind']})" if p.get("kind") else "") if x)
    lines.append(
        f"who      {who} {extra}".rstrip() + (f"   groups {', '.join(p['groups'])}" if p.get("groups") else "")
    )
    if h.client:
        lines.append(f"client   {h.client.get('name', '?')} {h.client.get('version', '')}".rstrip())
    lines.append(
        f"from     {_ts(h.started_ns, True)}   to {_ts(h.ended_ns, True) if h.ended_ns else 'open'}"
        + (f" ({h.end_reason})" if h.end_reason else "")
    )
    for problem in doc.problems:
        lines.append(f"INTEGRITY  {problem}")
    if doc.unverifiable:
        lines.append(
            f"INTEGRITY  {doc.unverifiable} records converted from version {doc.version_read} cannot be checked"
        )
    for e in timeline(doc) if entries is None else entries:
        t = _ts(e.ts_ns)
        if e.what == "event":
            lines.append(f"{t}  •  {e.method:<24} {e.detail or ''}".rstrip())
            continue
        arrow = {"c2s": "→", "s2c": "←"}.get(e.direction, "?")
        name = f"{e.method or '?':<24} {e.target or '':<24}"
        if e.what in ("exchange", "server-request"):
            lat = f"{e.latency_us / 1000:.1f} ms" if e.latency_us is not None else ""
            answer = e.answer or "no answer recorded"
            if e.outcome in ("denied", "failed", "upstream_failed"):
                answer = f"{e.outcome}: {answer}"
            decided = ""
            if e.decision:
                decided = f"  [{e.decision} by {e.rule}]" if e.rule else f"  [{e.decision}: the policy's default]"
            lines.append(f"{t}  {arrow}  {name} {lat:>10}  {answer}{decided}".rstrip())
        else:
            lines.append(f"{t}  {arrow}  {e.method or e.what}".rstrip())
        if e.approval:
            lines.append(f"{'':14}approval: {e.approval}")
        if e.detail:
            lines.append(f"{'':14}gateway: {e.detail}")
        if e.masked:
            lines.append(f"{'':14}masked: {', '.join(e.masked)}" + ("  (original sealed)" if e.sealed else ""))
    return lines


def timeline_json(doc: Document) -> dict[str, Any]:
    return {
        "header": asdict(header(doc)),
        "integrity": {
            "problems": doc.problems,
            "verified": doc.verified,
            "unverifiable": doc.unverifiable,
            "version_read": doc.version_read,
        },
        "entries": [asdict(e) for e in timeline(doc)],
    }


# --- comparing -------------------------------------------------------------------------------------------------


@dataclass
class Diff:
    path: str
    change: str  # changed, added, removed, length
    old: Any = None
    new: Any = None

    def __str__(self) -> str:
        def j(v: Any) -> str:
            s = orjson.dumps(v).decode()
            return s if len(s) <= 120 else s[:117] + "..."

        if self.change == "added":
            return f"{self.path}: added {j(self.new)}"
        if self.change == "removed":
            return f"{self.path}: removed (was {j(self.old)})"
        if self.change == "length":
            return f"{self.path}: {self.old} items, now {self.new}"
        return f"{self.path}: {j(self.old)} -> {j(self.new)}"


def diff(old: Any, new: Any, masked: frozenset[str] = frozenset(), path: str = "") -> list[Diff]:
    """Path-level differences (``result.content[0].text``); ``_meta`` members and masked paths are not compared."""
    if path in masked:
        return []
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[Diff] = []
        for k in [*old, *(k for k in new if k not in old)]:
            if k == "_meta":
                continue
            p = f"{path}.{k}" if path else str(k)
            if p in masked:
                continue
            if k not in new:
                out.append(Diff(p, "removed", old=old[k]))
            elif k not in old:
                out.append(Diff(p, "added", new=new[k]))
            else:
                out += diff(old[k], new[k], masked, p)
        return out
    if isinstance(old, list) and isinstance(new, list):
        out = [Diff(path, "length", len(old), len(new))] if len(old) != len(new) else []
        for i, (a, b) in enumerate(zip(old, new, strict=False)):
            out += diff(a, b, masked, f"{path}[{i}]")
        return out
    if isinstance(old, bool) or isinstance(new, bool):  # true == 1 in Python, not in JSON
        same = old is new
    elif isinstance(old, int | float) and isinstance(new, int | float):
        same = old == new  # 1 and 1.0: JSON has one number type
    else:
        same = type(old) is type(new) and old == new
    return [] if same else [Diff(path, "changed", old, new)]


def compare(recorded: Any, got: Any, masked: Iterable[str] = ()) -> tuple[list[Diff], list[str]]:
    """Differences between a recorded JSON-RPC answer and today's (the id and ``jsonrpc`` aside), and the masked
    paths that were not compared."""
    skip = frozenset(masked)
    a = {k: v for k, v in _obj(recorded).items() if k not in ("id", "jsonrpc")}
    b = {k: v for k, v in _obj(got).items() if k not in ("id", "jsonrpc")}
    return diff(a, b, skip), sorted(skip)


# --- replaying -------------------------------------------------------------------------------------------------


class ReplayError(Exception):
    """The replay could not run at all (the server cannot be reached, refuses to start a session)."""


@dataclass
class Replayed:
    seq: int
    method: str
    target: str | None
    verdict: str  # same, differs, skipped, error
    why: str = ""
    diffs: list[Diff] = field(default_factory=list)
    not_compared: list[str] = field(default_factory=list)  # masked paths (placeholders in the record)
    latency_us: int | None = None  # today's
    recorded_latency_us: int | None = None


@dataclass
class ReplayReport:
    url: str
    era: str
    protocol_version: str | None  # the recording's
    negotiated: str | None = None  # what the server agreed to today (session era)
    results: list[Replayed] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def differs(self) -> bool:
        return any(r.verdict == "differs" for r in self.results)

    @property
    def errors(self) -> bool:
        return any(r.verdict == "error" for r in self.results)

    @property
    def exit_code(self) -> int:
        """0 the same, 1 differences, 2 requests that could not be compared (and no differences)."""
        return 1 if self.differs else 2 if self.errors else 0

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        for r, j in zip(self.results, out["results"], strict=True):
            j["diffs"] = [{**asdict(d), "text": str(d)} for d in r.diffs]
        return out | {"differs": self.differs, "errors": self.errors}

    def lines(self) -> list[str]:
        out = [f"replay against {self.url}   era {self.era} {self.protocol_version or ''}".rstrip()]
        if self.negotiated and self.negotiated != self.protocol_version:
            out.append(
                f"note: the server negotiated {self.negotiated}, the session was recorded with {self.protocol_version}"
            )
        out += [f"note: {n}" for n in self.notes]
        for r in self.results:
            lat = ""
            if r.latency_us is not None:
                was = f" (was {r.recorded_latency_us / 1000:.1f})" if r.recorded_latency_us is not None else ""
                lat = f"{r.latency_us / 1000:.1f} ms{was}"
            out.append(f"#{r.seq:<6} {r.method:<24} {r.target or '':<24} {r.verdict.upper():<8} {r.why or lat}")
            out += [f"{'':8}{d}" for d in r.diffs]
            if r.not_compared and r.verdict in ("same", "differs"):
                out.append(f"{'':8}masked, not compared: {', '.join(r.not_compared)}")
        n = {v: sum(r.verdict == v for r in self.results) for v in ("same", "differs", "skipped", "error")}
        summary = ", ".join(f"{k} {v}" for k, v in n.items())
        verdict = "DIFFERENCES" if self.differs else "ERRORS" if self.errors else "no differences"
        out.append(f"{verdict} ({summary})")
        return out


class _Failed(Exception):
    """One request could not be replayed (HTTP error without a JSON-RPC answer, a broken stream, a timeout)."""


class _Wire:
    """A minimal Streamable HTTP client that keeps the bytes it is given: one POST per message."""

    def __init__(self, http: aiohttp.ClientSession, url: str, era: str, version: str | None, extra: dict[str, str]):
        self.http, self.url, self.era = http, url, era
        self.version = version
        self.extra = extra
        self.session_id: str | None = None
        self.envelope: dict[str, Any] = {}  # 2026-07-28: the recorded _meta members of the protocol
        self.notes: list[str] = []

    def headers(self, body: dict[str, Any]) -> dict[str, str]:
        h = {"Content-Type": "application/json", "Accept": ACCEPT, **self.extra}
        method = body.get("method")
        if self.era == "stateless":
            h["MCP-Protocol-Version"] = str(_obj(_obj(body.get("params")).get("_meta")).get(VERSION_KEY))
            if isinstance(method, str):
                h["Mcp-Method"] = method
                name = _obj(body.get("params")).get(NAMED.get(method, ""))
                if isinstance(name, str):
                    h["Mcp-Name"] = name
        elif method != "initialize":
            if self.version:
                h["MCP-Protocol-Version"] = self.version
            if self.session_id:
                h["Mcp-Session-Id"] = self.session_id
        return h

    def envelop(self, body: dict[str, Any]) -> dict[str, Any]:
        """2026-07-28: the request carries the recording's protocol _meta (version, capabilities, client info)."""
        if self.era != "stateless" or "method" not in body:
            return body
        params = dict(_obj(body.get("params")))
        params["_meta"] = {**self.envelope, **_obj(params.get("_meta"))}
        params["_meta"].setdefault(VERSION_KEY, self.version)
        return {**body, "params": params}

    async def send(self, body: dict[str, Any]) -> dict[str, Any] | None:
        """POST one message; the answer to a request (JSON or SSE), None for an accepted notification."""
        body = self.envelop(body)
        async with self.http.post(self.url, data=orjson.dumps(body), headers=self.headers(body)) as r:
            if body.get("method") == "initialize" and r.headers.get("Mcp-Session-Id"):
                self.session_id = r.headers["Mcp-Session-Id"]
            ctype = r.headers.get("Content-Type", "").split(";")[0].strip().lower()
            if ctype == "text/event-stream" and r.status < 400:
                return await self._stream(r, body.get("id"))
            raw = await r.read()
            if r.status == 202 or (r.status < 300 and not raw.strip()):
                if "id" in body:
                    raise _Failed(f"HTTP {r.status} without an answer")
                return None
            msg = _json(raw.decode("utf-8", "replace"))
            if isinstance(msg, dict) and ("result" in msg or "error" in msg):
                return msg  # an HTTP error status with a JSON-RPC error is an answer like any other
            raise _Failed(f"HTTP {r.status}: {raw[:200].decode('utf-8', 'replace')}".strip())

    async def _stream(self, r: aiohttp.ClientResponse, want: Any) -> dict[str, Any]:
        parser = SSEParser()
        try:
            async for chunk in r.content.iter_any():
                for ev in parser.feed(chunk):
                    if not ev.data.strip():
                        continue  # a priming event
                    msg = _obj(_json(ev.data.decode("utf-8", "replace")))
                    if msg.get("id") == want and ("result" in msg or "error" in msg):
                        return msg
                    if "method" in msg and "id" in msg:  # sampling, elicitation, roots: nobody to ask
                        self.notes.append(f"the server asked {msg['method']}; refused during the replay")
                        if self.era != "stateless":  # (a 2026-07-28 client sends no responses)
                            await self._refuse(msg["id"])
        except SSEParseError as exc:
            raise _Failed(f"bad SSE stream: {exc}") from None
        raise _Failed("the SSE stream ended without an answer")

    async def _refuse(self, msg_id: Any) -> None:
        body = {"jsonrpc": "2.0", "id": msg_id, "error": {"code": -32601, "message": "not available in a replay"}}
        async with self.http.post(self.url, data=orjson.dumps(body), headers=self.headers(body)) as r:
            await r.read()

    async def close(self) -> None:
        if self.era != "stateless" and self.session_id:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with self.http.delete(self.url, headers=self.headers({})) as r:
                    await r.read()


def _skip_reason(answer: dict[str, Any] | None) -> str | None:
    """Why a recorded request must not be sent again (None: it reached the server at the time)."""
    if answer is None:
        return "no answer recorded (cancelled or cut off at the time): nothing to compare with"
    outcome = answer.get("outcome")
    if outcome in ("denied", "failed"):
        decision, rule = answer.get("decision"), answer.get("rule")
        if decision in ("deny", "hold") and outcome == "denied":
            word = "denied" if decision == "deny" else "held"
            return f"not replayed: {word} by rule {rule} at the time"
        return f"not replayed: answered by the gateway at the time ({answer.get('detail') or outcome})"
    return None


async def _read_only_tools(w: _Wire) -> set[str]:
    names: set[str] = set()
    cursor: str | None = None
    for page in range(MAX_LIST_PAGES):
        params = {} if cursor is None else {"cursor": cursor}
        got = await w.send(
            {"jsonrpc": "2.0", "id": f"portcullis-replay-tools-{page}", "method": "tools/list", "params": params}
        )
        result = _obj(_obj(got).get("result"))
        for t in result.get("tools") or []:
            if isinstance(t, dict) and _obj(t.get("annotations")).get("readOnlyHint") is True:
                names.add(str(t.get("name")))
        cursor = result.get("nextCursor") if isinstance(result.get("nextCursor"), str) else None
        if not cursor:
            break
    return names


async def replay_against(
    doc: Document,
    url: str,
    force: bool = False,
    headers: dict[str, str] | None = None,
    request_timeout: float = 30.0,
) -> ReplayReport:
    """Re-send the session's requests to ``url`` in the recording's era and compare the answers (see the module).

    Raises ReplayError when the replay cannot start (unreachable, initialize refused)."""
    era, version = session_era(doc)
    report = ReplayReport(url, era, version)
    recs = doc.records
    answers: dict[tuple[int, Any], list[dict[str, Any]]] = {}
    for r in recs:
        if r["direction"] == "s2c" and r["kind"] in ("result", "error"):
            answers.setdefault(_key(r), []).append(r)

    def answer_to(req: dict[str, Any]) -> dict[str, Any] | None:
        """The first answer after the request with its flow and id (flow ids restart with a gateway process)."""
        return next((a for a in answers.get(_key(req), ()) if a["seq"] > req["seq"]), None)

    sent = [r for r in recs if r["direction"] == "c2s" and r["kind"] == "request"]
    init = next((r for r in sent if r.get("method") == "initialize"), None)
    if era != "stateless" and init is None:
        report.notes.append("the recording has no initialize: a default one was sent")
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=request_timeout)) as http:
        w = _Wire(http, url, era, version, headers or {})
        if era == "stateless":
            first = next((_obj(_obj(_json(r.get("payload"))).get("params")).get("_meta") for r in sent), None)
            w.envelope = {k: v for k, v in _obj(first).items() if k.startswith("io.modelcontextprotocol/")}
        try:
            if era != "stateless":
                params = _obj(_obj(_json(init.get("payload"))).get("params")) if init else {}
                if not params:
                    params = {
                        "protocolVersion": version or "2025-11-25",
                        "capabilities": {},
                        "clientInfo": {"name": "portcullis-replay", "version": "1"},
                    }
                started = time.monotonic_ns()
                got = await w.send(
                    {"jsonrpc": "2.0", "id": "portcullis-replay-init", "method": "initialize", "params": params}
                )
                if "result" not in _obj(got):
                    raise ReplayError(f"the server refused initialize: {orjson.dumps(got).decode()[:300]}")
                w.version = report.negotiated = _obj(_obj(got).get("result")).get("protocolVersion") or version
                await w.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
                if init is not None:
                    _judge(report, init, answer_to(init), got, time.monotonic_ns() - started)
            read_only = set() if force else await _read_only_tools(w)
        except aiohttp.ClientConnectionError as exc:
            raise ReplayError(f"cannot reach {url}: {exc or type(exc).__name__}") from None
        except (aiohttp.ClientError, TimeoutError, _Failed) as exc:
            raise ReplayError(f"cannot start the replay against {url}: {exc or type(exc).__name__}") from None
        try:
            for r in sent:
                if r is init:
                    continue
                msg = _obj(_json(r.get("payload")))
                method = str(msg.get("method") or r.get("method"))
                target = target_of(msg)
                answer = answer_to(r)
                why = _skip_reason(answer) if "method" in msg else "the recorded request is not readable JSON"
                if (
                    why is None
                    and not force
                    and not (method in READS or (method == "tools/call" and target in read_only))
                ):
                    why = "not read-only; use --force"
                if why is not None:
                    report.results.append(Replayed(r["seq"], method, target, "skipped", why))
                    continue
                started = time.monotonic_ns()
                try:
                    got = await w.send(msg)
                except (aiohttp.ClientError, TimeoutError, _Failed) as exc:
                    report.results.append(Replayed(r["seq"], method, target, "error", str(exc) or type(exc).__name__))
                    continue
                assert answer is not None
                _judge(report, r, answer, got, time.monotonic_ns() - started)
        finally:
            await w.close()
        report.notes += w.notes
    return report


def _judge(report: ReplayReport, req: dict[str, Any], answer: dict[str, Any] | None, got: Any, took_ns: int) -> None:
    msg = _obj(_json(req.get("payload")))
    out = Replayed(req["seq"], str(msg.get("method") or req.get("method")), target_of(msg), "same")
    out.latency_us = took_ns // 1000
    report.results.append(out)
    if answer is None:
        out.verdict, out.why = "skipped", "replayed; no recorded answer to compare with"
        return
    out.recorded_latency_us = answer.get("latency_us")
    masked = [str(m.get("path")) for m in (_json(answer.get("masked")) or []) if isinstance(m, dict)]
    out.diffs, out.not_compared = compare(_json(answer.get("payload")), got, masked)
    if out.diffs:
        out.verdict = "differs"
