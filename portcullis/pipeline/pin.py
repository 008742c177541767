"""The ``pin`` stage: tool poisoning and rug pulls.

Every tool, prompt, resource and resource template a server lists is fingerprinted (SHA-256 of its canonical JSON,
``_meta`` left out) the first time the gateway sees it — trust on first use — or pinned in the config
(``definitions.pins``). From then on the stage compares each listing with what was accepted:

- **changed** (a description, a schema, anything but ``_meta``): recorded (``definition_changed``), and by
  ``definitions.on_change``: ``block`` (default) hides it from the list and refuses calls to it
  (``-32012``) until an admin accepts the new definition (``portcullis definitions accept``); ``flag`` records and
  lets it through;
- **suspicious** text in a definition (``definitions.scan``: RE2 patterns such as "ignore previous instructions",
  hidden-text characters, instructions to hide things from the user): recorded (``definition_suspicious``) and
  treated like a change — including on first sight, so a poisoned tool is never trusted by default.

It runs after ``mask`` in the pipeline, so that on the way back it sees the server's own listing before any other
stage changes it. The stage does no I/O: what must be stored goes to :class:`DefinitionBook`'s queue, which the
gateway writes to the store; events go into the flow's records.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
import re2  # type: ignore[import-untyped]

from portcullis.flow import Flow, Outcome
from portcullis.pipeline.base import Stage
from portcullis.pipeline.record import event_record
from portcullis.wire.jsonrpc import Kind

DEFINITION_CHANGED = -32012
LISTS = {
    "tools/list": ("tools", "tool"),
    "prompts/list": ("prompts", "prompt"),
    "resources/list": ("resources", "resource"),
    "resources/templates/list": ("resourceTemplates", "resource_template"),
}
USES = {"tools/call": ("tool", "name"), "prompts/get": ("prompt", "name"), "resources/read": ("resource", "uri")}
DEFAULT_SCAN = {
    "ignore-instructions": r"(?i)\b(ignore|disregard|forget)\b.{0,40}\b(previous|prior|above|earlier|all)\b.{0,20}"
    r"\b(instructions?|rules|prompts?)\b",
    "hide-from-user": r"(?i)\b(do not|don't|never)\b.{0,30}\b(tell|mention|reveal|show|inform)\b.{0,30}\buser\b",
    "hidden-tags": r"(?i)<\s*(important|system|secret|hidden|instructions?)\s*>",
    "invisible-text": "[\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff\U000e0000-\U000e007f]",
    "exfiltrate-secrets": r"(?i)\b(read|send|include|pass|upload)\b.{0,40}(\.ssh|id_rsa|\.env\b|api[_ -]?keys?|"
    r"passwords?|credentials)",
}


def canonical(item: dict[str, Any]) -> bytes:
    return orjson.dumps({k: v for k, v in item.items() if k != "_meta"}, option=orjson.OPT_SORT_KEYS)


def digest(canon: bytes) -> str:
    return hashlib.sha256(canon).hexdigest()


@dataclass(slots=True)
class Pinned:
    accepted: str  # digest trusted
    seen: str  # newest digest announced
    findings: tuple[str, ...] = ()

    @property
    def changed(self) -> bool:
        return self.seen != self.accepted or bool(self.findings)


@dataclass(slots=True)
class Sighting:
    """What the stage saw, for the store: a first sighting, a change, or a definition matching again."""

    server: str
    kind: str
    name: str
    digest: str
    definition: str
    first: bool
    findings: tuple[str, ...]
    ts_ns: int = field(default_factory=time.time_ns)


class DefinitionBook:
    """The pins, in memory (the stage reads them) and in the store (the gateway syncs them both ways)."""

    def __init__(self, pins: dict[str, dict[str, str]], scan: dict[str, str], block: bool) -> None:
        self.block = block
        self._pins: dict[tuple[str, str, str], Pinned] = {}
        self._config: dict[tuple[str, str, str], str] = {}
        for server, by_name in pins.items():
            for name, d in by_name.items():
                kind, _, n = name.partition(":") if ":" in name else ("tool", "", name)
                self._config[(server, kind, n)] = d
        self._scan = [(label, re2.compile(p)) for label, p in scan.items()]
        self.queue: list[Sighting] = []
        self._lock = threading.Lock()

    def load(self, rows: Iterable[dict[str, Any]]) -> None:
        """From the store (at start and now and then: acceptances made elsewhere take effect)."""
        fresh = {}
        for r in rows:
            key = (r["server"], r["kind"], r["name"])
            findings = tuple(orjson.loads(r["findings"])) if r.get("findings") else ()
            accepted = self._config.get(key, r["accepted_digest"])
            fresh[key] = Pinned(accepted, r["seen_digest"], findings)
        with self._lock:
            for key, p in fresh.items():
                mine = self._pins.get(key)
                if mine is None or mine.seen == p.seen:
                    self._pins[key] = p
                else:  # seen again here since the store was read: keep our newer sighting, take its acceptance
                    mine.accepted = p.accepted

    def scan(self, canon: bytes) -> tuple[str, ...]:
        text = canon.decode("utf-8", "replace")
        return tuple(label for label, rx in self._scan if rx.search(text))

    def see(self, server: str, kind: str, name: str, canon: bytes) -> Pinned:
        d = digest(canon)
        key = (server, kind, name)
        with self._lock:
            p = self._pins.get(key)
            if p is not None and p.seen == d:
                return p  # the common case: as before
            findings = self.scan(canon)
            if p is None:
                pinned = self._config.get(key)
                p = Pinned(pinned or d, d, findings)
                if findings and pinned is None:
                    p.accepted = ""  # a poisoned definition is never trusted on first sight
                self._pins[key] = p
                self.queue.append(Sighting(server, kind, name, d, canon.decode(), True, findings))
            else:
                p.seen, p.findings = d, findings
                self.queue.append(Sighting(server, kind, name, d, canon.decode(), False, findings))
            return p

    def state(self, server: str, kind: str, name: str) -> Pinned | None:
        return self._pins.get((server, kind, name))

    def drain(self) -> list[Sighting]:
        with self._lock:
            out, self.queue = self.queue, []
        return out

    def requeue(self, seen: list[Sighting]) -> None:
        """Sightings the store did not take: first in line for the next round."""
        with self._lock:
            self.queue[:0] = seen


class PinStage(Stage):
    name = "pin"

    def __init__(self, book: DefinitionBook) -> None:
        self.book = book

    def on_request(self, flow: Flow) -> None:
        use = USES.get(flow.request.method or "")
        if use is None or not self.book.block:
            return
        kind, key = use
        name = flow.request.params.get(key)
        if not isinstance(name, str):
            return
        p = self.book.state(flow.server, kind, name)
        if p is not None and p.changed:
            why = f"its definition changed since it was accepted ({', '.join(p.findings) or 'a new fingerprint'})"
            flow.fail(
                DEFINITION_CHANGED,
                f"Request blocked: {kind} {name!r} of {flow.server!r} is quarantined: {why}; an admin must accept "
                f"the new definition (portcullis definitions accept {flow.server} {kind} {name})",
                by=self.name,
                outcome=Outcome.DENIED,
                data={"server": flow.server, "kind": kind, "name": name, "digest": p.seen},
            )

    def on_response(self, flow: Flow) -> None:
        listing = LISTS.get(flow.request.method or "")
        resp = flow.response
        if listing is None or resp is None or resp.kind is not Kind.RESULT or flow.answered_by is not None:
            return
        result = resp.body.get("result")
        field_name, kind = listing
        if not isinstance(result, dict) or not isinstance(items := result.get(field_name), list):
            return
        key = "uri" if kind == "resource" else ("uriTemplate" if kind == "resource_template" else "name")
        kept: list[Any] = []
        hidden = False
        for item in items:
            name = item.get(key) if isinstance(item, dict) else None
            if not isinstance(name, str):
                kept.append(item)
                continue
            before = self.book.state(flow.server, kind, name)
            was = before.seen if before is not None else None
            p = self.book.see(flow.server, kind, name, canonical(item))
            if p.seen != was and p.changed:
                what = "definition_suspicious" if p.findings else "definition_changed"
                detail = f"{kind} {name!r}: {p.seen[:16]} (accepted {p.accepted[:16] or 'none'})"
                if p.findings:
                    detail += f"; findings {list(p.findings)}"
                flow.records.append(event_record(flow.server, flow.session_id, what, detail[:2000]))
            elif p.seen != was:  # first sight, or back to the accepted definition
                what = "definition_first_seen" if before is None else "definition_restored"
                flow.records.append(event_record(flow.server, flow.session_id, what, f"{kind} {name!r}: {p.seen[:16]}"))
            if p.changed and self.book.block:
                hidden = True
                continue
            kept.append(item)
        if hidden:
            resp.replace({**resp.body, "result": {**result, field_name: kept}})
