"""The masker: which classes a caller gets masked, and masking one message body in place.

Choices are resolved per (server, caller groups) into a :class:`Plan` — the classes to mask, how, and the detector
compiled for exactly those classes — and cached. Masking a message:

1. the walker collects every maskable string (``walker.collect``);
2. the strings are joined with NUL into one UTF-8 buffer and scanned once (``Detector.find_bytes``); a string whose
   object key is password- or key-like is checked with that key as its context;
3. every value found is also replaced wherever else it occurs in the message (so ``structuredContent`` and its text
   twin, or a secret repeated without context, mask the same way);
4. changed strings are written back; the report says which classes were masked at which paths.

Nothing here does I/O. Anything that cannot be decided within bounds raises :class:`MaskingError`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any

import orjson

from portcullis.masking.classes import CLASSES, OPTIONAL
from portcullis.masking.engine import Budget, Detector, MaskingError
from portcullis.masking.replace import replacement
from portcullis.masking.rules import BUILTIN, Rule, value_ok
from portcullis.masking.walker import Strings, collect, path_text

KEY_CONTEXT_CLASSES = frozenset({"password_assignment", "high_entropy_secret"})
MIN_PROPAGATE = 6  # shorter values are replaced only where they were found (a 4-digit PIN is no global literal)


@dataclass(frozen=True, slots=True)
class Profile:
    """What to mask and how, for some servers and groups."""

    classes: frozenset[str]
    mode: str = "label"
    modes: Mapping[str, str] = field(default_factory=dict)
    unmasked_for: Mapping[str, frozenset[str]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Override:
    """A profile for callers in any of ``groups`` (and, if given, only on ``servers``). First match wins."""

    groups: frozenset[str]
    servers: frozenset[str]
    profile: Profile


@dataclass(frozen=True, slots=True)
class Plan:
    classes: frozenset[str]
    detector: Detector | None
    mode: str
    modes: Mapping[str, str]
    key_context: bool

    def mode_of(self, cls: str) -> str:
        return self.modes.get(cls, self.mode)


@dataclass(slots=True)
class Result:
    """What masking did to one message: the report for the record, and whether anything changed."""

    masked: list[dict[str, Any]]

    @property
    def changed(self) -> bool:
        return bool(self.masked)


class Masker:
    def __init__(
        self,
        default: Profile,
        servers: Mapping[str, Profile] | None = None,
        overrides: Sequence[Override] = (),
        custom: Sequence[Rule] = (),
        pseudonym_key: bytes = b"",
        max_candidates: int = 50_000,
        max_depth: int = 64,
        builtin: Sequence[Rule] = BUILTIN,
    ) -> None:
        self.default = default
        self.servers = dict(servers or {})
        self.overrides = tuple(overrides)
        self.custom = tuple(custom)
        self._key = pseudonym_key or hashlib.sha256(b"portcullis-unkeyed").digest()
        self.max_candidates = max_candidates
        self.max_depth = max_depth
        self._plans: dict[tuple[str, frozenset[str]], Plan] = {}
        self._detectors: dict[frozenset[str], Detector] = {}
        self._rules = (*builtin, *self.custom)
        # compile every detector a configured profile can need now, so a bad custom pattern fails at start
        for p in (default, *self.servers.values(), *(o.profile for o in self.overrides)):
            self._detector(p.classes)

    # --- choices ------------------------------------------------------------------------------------------

    def plan(self, server: str, groups: frozenset[str]) -> Plan:
        key = (server, groups)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._resolve(server, groups)
            if len(self._plans) < 10_000:
                self._plans[key] = plan
        return plan

    def _resolve(self, server: str, groups: frozenset[str]) -> Plan:
        profile = self.servers.get(server, self.default)
        for o in self.overrides:
            if o.groups & groups and (not o.servers or server in o.servers):
                profile = o.profile
                break
        classes = frozenset(c for c in profile.classes if not (profile.unmasked_for.get(c, frozenset()) & groups))
        return Plan(
            classes=classes,
            detector=self._detector(classes),
            mode=profile.mode,
            modes=profile.modes,
            key_context=bool(classes & KEY_CONTEXT_CLASSES),
        )

    def _detector(self, classes: frozenset[str]) -> Detector | None:
        if not classes:
            return None
        det = self._detectors.get(classes)
        if det is None:
            rules = [r for r in self._rules if r.cls in classes]
            det = self._detectors[classes] = Detector(rules) if rules else None  # type: ignore[assignment]
        return det

    # --- masking ------------------------------------------------------------------------------------------

    def session_key(self, session: str | None) -> bytes:
        return hmac.new(self._key, (session or "").encode(), hashlib.sha256).digest()

    def mask(
        self, body: dict[str, Any], part: str, plan: Plan, session: str | None, principal: str | None = None
    ) -> Result:
        """Mask ``body[part]`` in place. Raises MaskingError when it cannot be done within bounds.

        Pseudonyms are keyed per session; without a session (2026-07-28) per principal, so they never link
        different callers. A tool result's JSON text twin of ``structuredContent`` is not scanned on its own: it is
        written again from the masked ``structuredContent``, so the two stay equal (numbers, escapes and all)."""
        root = body.get(part)
        if plan.detector is None:
            return Result([])
        strings = Strings()
        if isinstance(root, str):
            if root:
                strings.add(body, part, root, (), None)
            twins: list[tuple[dict[str, Any], bool]] = []
        else:
            twins = _twins(root) if part == "result" else []
            for item, _pretty in twins:
                item["text"] = ""  # left out of the walk; rewritten below
            collect(root, (part,), self.max_depth, strings)
        scope = session if session is not None else f"principal:{principal or ''}"
        res = self._mask_strings(strings, plan, scope) if len(strings) else Result([])
        if twins:
            assert isinstance(root, dict)
            sc = root.get("structuredContent")
            in_sc: dict[str, int] = {}
            for m in res.masked:
                if m["path"].startswith("result.structuredContent"):
                    in_sc[m["class"]] = in_sc.get(m["class"], 0) + m["count"]
            content = root["content"]
            for item, pretty in twins:
                item["text"] = json.dumps(sc, indent=2, ensure_ascii=False) if pretty else orjson.dumps(sc).decode()
                where = f"result.content[{next(i for i, c in enumerate(content) if c is item)}].text"
                res.masked.extend({"class": c, "path": where, "count": n} for c, n in in_sc.items())
        return res

    def _mask_strings(self, strings: Strings, plan: Plan, session: str) -> Result:
        det = plan.detector
        assert det is not None
        texts = strings.texts
        sentinel = ""
        if any("\x00" in t for t in texts):
            # strings that hold NUL themselves: another unused character stands in for it while the strings share one
            # NUL-joined buffer (key context, consistency and the budget stay whole), and comes back afterwards
            sentinel = _sentinel(texts)
            texts = [t.replace("\x00", sentinel) for t in texts]
        joined_text = "\x00".join(texts)
        data = joined_text.encode("utf-8", "surrogatepass")
        budget = Budget(self.max_candidates)
        found = [(f.start, f.end, f.cls) for f in det.find_bytes(data, budget)]
        if not plan.key_context and not found:
            return Result([])
        # where each string starts in ``data`` (bytes), for key context and for the report
        lengths = (
            map(len, texts)
            if len(data) == len(joined_text)
            else (len(t.encode("utf-8", "surrogatepass")) for t in texts)
        )
        starts = [0, *accumulate(n + 1 for n in lengths)]
        if plan.key_context:
            classes = plan.classes
            for i, cls in strings.ctx:
                if cls not in classes:
                    continue
                budget.spend()
                start, end = starts[i], starts[i + 1] - 1
                keep = value_ok(cls, data[start:end], True)
                if keep:
                    found.append((start, start + keep, cls))
        if not found:
            return Result([])
        found = _propagate(data, _split_at_nul(data, found), budget)
        out = bytearray()
        last = 0
        key = self.session_key(session) if any(plan.mode_of(c) == "pseudonym" for _s, _e, c in found) else b""
        counts: dict[tuple[int, str], int] = {}
        for start, end, cls in found:
            out += data[last:start]
            out += replacement(plan.mode_of(cls), cls, data[start:end], key)
            last = end
            i = bisect_right(starts, start) - 1
            counts[(i, cls)] = counts.get((i, cls), 0) + 1
        out += data[last:]
        new_texts = bytes(out).decode("utf-8", "surrogatepass").split("\x00")
        if len(new_texts) != len(texts):
            raise MaskingError("masking changed the message structure")  # cannot happen: replacements have no NUL
        for i in {i for i, _c in counts}:
            text = new_texts[i].replace(sentinel, "\x00") if sentinel else new_texts[i]
            strings.put(i, text)
        return Result([{"class": c, "path": path_text(strings.path(i)), "count": n} for (i, c), n in counts.items()])


def _sentinel(texts: list[str]) -> str:
    """A control character (no rule's value may contain one) or else a private-use character, in none of the
    strings."""
    for cp in (*range(0x01, 0x09), *range(0x0E, 0x20), *range(0xE000, 0xF900)):
        ch = chr(cp)
        if not any(ch in t for t in texts):
            return ch
    raise MaskingError("the message uses every private-use character")


def _twins(result: Any) -> list[tuple[dict[str, Any], bool]]:
    """The text items of a tool result that are the JSON twin of its ``structuredContent`` (and whether pretty)."""
    if not isinstance(result, dict) or "structuredContent" not in result:
        return []
    content = result.get("content")
    if not isinstance(content, list):
        return []
    sc = result["structuredContent"]
    out = []
    for item in content:
        if isinstance(item, dict) and item.get("type") == "text" and isinstance(item.get("text"), str):
            try:
                if orjson.loads(item["text"]) == sc:
                    out.append((item, "\n" in item["text"]))
            except orjson.JSONDecodeError:
                continue
    return out


# classes found by where they sit (a key name, an assignment, a URI's userinfo, a header) rather than by their own
# shape: the same value elsewhere, without that context, would not be found again, so it is replaced everywhere
CONTEXT_FOUND = frozenset(
    {"password_assignment", "high_entropy_secret", "aws_secret_access_key", "uri_credentials", "http_auth"}
)
MAX_LITERALS = 1000


def _propagate(data: bytes, found: list[tuple[int, int, str]], budget: Budget) -> list[tuple[int, int, str]]:
    """A value found by its context is masked wherever else it occurs too (also JSON-escaped)."""
    literals: dict[bytes, str] = {}
    for s, e, cls in found:
        lit = data[s:e]
        if len(lit) >= MIN_PROPAGATE and (cls in CONTEXT_FOUND or cls not in CLASSES):
            literals.setdefault(lit, cls)
            if b'"' in lit or b"\\" in lit or b"\n" in lit or b"\t" in lit or b"\r" in lit:
                literals.setdefault(orjson.dumps(lit.decode("utf-8", "surrogatepass"))[1:-1], cls)
    if len(literals) > MAX_LITERALS:
        raise MaskingError(f"more than {MAX_LITERALS} distinct context-found values in one message")
    extra: list[tuple[int, int, str]] = []
    for lit, cls in literals.items():
        budget.spend()
        pos = data.find(lit)
        while pos >= 0:
            end = pos + len(lit)
            if _bounded(data, pos, end):
                extra.append((pos, end, cls))
            pos = data.find(lit, end)
    return _merge_spans(found + extra) if extra else _merge_spans(found)


def _split_at_nul(data: bytes, found: list[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
    """No rule matches across the NUL between two strings; should one ever, each side is still masked."""
    out: list[tuple[int, int, str]] = []
    for s, e, cls in found:
        cut = data.find(b"\x00", s, e)
        while cut >= 0:
            if cut > s:
                out.append((s, cut, cls))
            s = cut + 1
            cut = data.find(b"\x00", s, e)
        if e > s:
            out.append((s, e, cls))
    return out


def _alnum(c: int) -> bool:
    return 48 <= c <= 57 or 65 <= c <= 90 or 97 <= c <= 122


def _bounded(data: bytes, start: int, end: int) -> bool:
    """The occurrence is not the middle of a longer word (a found 10.0.0.1 does not mask 10.0.0.12)."""
    if start > 0 and _alnum(data[start - 1]) and _alnum(data[start]):
        return False
    return not (end < len(data) and _alnum(data[end]) and _alnum(data[end - 1]))


def _merge_spans(spans: list[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
    out: list[tuple[int, int, str]] = []
    for s, e, c in sorted(spans, key=lambda t: (t[0], -t[1])):
        if out and s < out[-1][1]:
            ps, pe, pc = out[-1]
            if e > pe:
                out[-1] = (ps, e, pc)
            continue
        out.append((s, e, c))
    return out


def all_classes() -> frozenset[str]:
    return frozenset(CLASSES) - OPTIONAL
