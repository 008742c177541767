"""The detection engine: every rule compiled once into RE2, with one RE2 ``Set`` in front as a prefilter.

``Detector.find_bytes`` scans UTF-8 bytes: one set scan says which rules can match at all (clean text stops
there), then each of those rules runs over the text and its validator keeps or drops each candidate. Overlapping
findings are merged (the longer one names the class). RE2 runs in time linear in the input, so hostile text cannot
make a scan backtrack; what could still grow — the number of candidates a validator must look at — is capped by
``Budget`` and raises :class:`MaskingError` (the caller fails closed).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import re2  # type: ignore[import-untyped]

from portcullis.masking.rules import BUILTIN, Rule


class MaskingError(Exception):
    """The text could not be masked within the configured bounds; the message must not be forwarded."""


@dataclass(frozen=True, slots=True)
class Finding:
    start: int
    end: int
    cls: str


class Budget:
    """How many candidates one message may make the validators look at."""

    __slots__ = ("left",)

    def __init__(self, candidates: int) -> None:
        self.left = candidates

    def spend(self) -> None:
        self.left -= 1
        if self.left < 0:
            raise MaskingError("too many candidate matches to validate within the masking budget")


_UNANCHORED = re2._Anchor.UNANCHORED
CHUNK = 1024  # bytes per set scan in long texts (cut at the next line end)
RuleSet = tuple[Any, list[int]]  # an RE2 set and, per set index, the rule's index in the detector


def _set(opts: Any, rules: list[tuple[int, Rule]]) -> RuleSet:
    s = re2.Set.SearchSet(opts)
    for j, (_i, rule) in enumerate(rules):
        if s.Add(rule.pattern) != j:
            raise ValueError(f"rule {rule.cls!r}: pattern rejected by RE2")
    s.Compile()
    return s, [i for i, _r in rules]


def _match(rs: RuleSet, data: bytes | memoryview) -> list[int]:
    if not rs[1]:
        return []
    got: list[int] | None = rs[0]._set.Match(data)  # the C set under the wrapper: takes any buffer, no copy
    return got or []


def _options() -> Any:
    opts = re2.Options()
    opts.max_mem = 64 << 20
    return opts


class Detector:
    """A compiled rule set. Immutable after construction; safe to share."""

    def __init__(self, rules: Sequence[Rule]) -> None:
        self.rules = tuple(rules)
        opts = _options()
        self._compiled: list[Any] = []  # the RE2 objects under google-re2's Python wrapper: one C call per match
        for rule in self.rules:
            self._compiled.append(re2.compile(rule.pattern, opts)._regexp)
        self._all = _set(opts, [(i, r) for i, r in enumerate(self.rules)])
        self._line = _set(opts, [(i, r) for i, r in enumerate(self.rules) if not r.multiline])
        self._multi = [i for i, r in enumerate(self.rules) if r.multiline]
        self.classes = frozenset(r.cls for r in self.rules)

    def find_bytes(self, data: bytes, budget: Budget | None = None) -> list[Finding]:
        """Findings in ``data`` as byte offsets, sorted and non-overlapping.

        One set scan says which rules can match at all (clean text stops there: one linear pass). Each of those then
        runs over the text — except in a long text with several of them, which is cut into chunks at line ends and
        scanned chunk by chunk, so that each rule runs only over the chunks it can match in (no line-local rule
        matches across a line end; the few multi-line rules — PEM blocks, XML elements — run over the whole text).
        """
        n = len(data)
        hit = _match(self._all, data)
        if not hit:
            return []
        raw: list[Finding] = []
        if n <= 2 * CHUNK or len(hit) <= 2:
            self._run_all(hit, data, 0, n, raw, budget)
            return merge(_suppress(raw) if len(hit) > 1 else raw)
        # several rules over a long text: find where, chunk by chunk, so each runs only where it can match
        wanted = frozenset(hit)
        view = memoryview(data)
        pos = 0
        while pos < n:
            cut = data.find(b"\n", pos + CHUNK)
            end = n if cut < 0 else cut + 1
            here = [i for j in _match(self._line, view[pos:end]) if (i := self._line[1][j]) in wanted]
            # start one byte early: the line end before the chunk is the boundary its first value needs
            self._run_all(here, data, max(pos - 1, 0), end, raw, budget)
            pos = end
        for i in self._multi:
            if i in wanted:
                self._run(i, data, 0, n, raw, budget)
        return merge(_suppress(raw))

    def _run_all(
        self, hit: Sequence[int], data: bytes, pos: int, end: int, raw: list[Finding], budget: Budget | None
    ) -> None:
        for i in hit:
            self._run(i, data, pos, end, raw, budget)

    def _run(self, i: int, data: bytes, pos: int, end: int, raw: list[Finding], budget: Budget | None) -> None:
        rule = self.rules[i]
        match = self._compiled[i].Match
        while pos < end:
            spans = match(_UNANCHORED, data, pos, end)
            mend = spans[0][1]
            if mend < 0:
                return
            if budget is not None:
                budget.spend()
            for s, e, cls in rule.findings(data, spans):
                if e > s:
                    raw.append(Finding(s, e, cls))
            # go on from the match's last character: a pattern may consume one boundary character after its
            # value, and that character may be the one the next value needs before it
            pos = max(mend - 1, pos + 1)

    def find(self, text: str, budget: Budget | None = None) -> list[Finding]:
        """Findings in ``text`` as character offsets."""
        data = text.encode("utf-8", "surrogatepass")
        found = self.find_bytes(data, budget)
        if not found or len(data) == len(text):
            return found
        return [Finding(_char(data, f.start), _char(data, f.end), f.cls) for f in found]


def _char(data: bytes, offset: int) -> int:
    return len(data[:offset].decode("utf-8", "surrogatepass"))


def _suppress(raw: list[Finding]) -> list[Finding]:
    """A URI's password hides the e-mail address its user:password@host looks like."""
    strong = [f for f in raw if f.cls == "uri_credentials"]
    if not strong:
        return raw
    return [f for f in raw if f.cls != "email" or not any(s.start < f.end and f.start < s.end for s in strong)]


# classes that say only *where* a secret sits; when a finding of a class that says *what* it is overlaps, that wins
GENERIC = frozenset({"http_auth", "password_assignment", "high_entropy_secret"})


def merge(findings: Iterable[Finding]) -> list[Finding]:
    """Sort and merge overlapping findings. A merged span is named by its most specific, then longest, part."""
    out: list[Finding] = []
    rank: tuple[bool, int] = (True, 0)
    for f in sorted(findings, key=lambda f: (f.start, -f.end)):
        mine = (f.cls not in GENERIC, f.end - f.start)
        if out and f.start < out[-1].end:
            last = out[-1]
            cls = f.cls if mine > rank else last.cls
            rank = max(rank, mine)
            out[-1] = Finding(last.start, max(last.end, f.end), cls)
            continue
        out.append(f)
        rank = mine
    return out


_DEFAULT: dict[frozenset[str], Detector] = {}


def default_detector(include: Iterable[str] = (), exclude: Iterable[str] = ()) -> Detector:
    """The built-in rules (the optional classes only when included), compiled once per combination."""
    from portcullis.masking.classes import OPTIONAL

    wanted = {r.cls for r in BUILTIN if r.cls not in OPTIONAL} | set(include)
    wanted -= set(exclude)
    key = frozenset(wanted)
    det = _DEFAULT.get(key)
    if det is None:
        det = _DEFAULT[key] = Detector([r for r in BUILTIN if r.cls in key])
    return det
