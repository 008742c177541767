"""The masking detectors scored on the project's own labelled corpus (issue 4): the acceptance test for detection.

The corpus (``tests/support/mask_corpus.py``) is realistic tool output with exact labels: spans that must be masked
(by class) and hard negatives that must survive (by kind). A labelled span counts as recalled when the findings,
whatever their class, cover every character of it; a hard negative counts as hit when any finding overlaps it; a
record without positives counts as touched when it gets any finding at all. Targets: recall >= 99 % for formatted
secrets, e-mail and checksummed PII, >= 95 % for context-dependent classes, <= 1 % of hard negatives hit, <= 1 % of
records without positives touched, and IP addresses (an optional class) found only when asked for.

Every failure prints the whole scorecard, with examples of what was missed or wrongly hit and the text around it.
"""

from __future__ import annotations

import collections
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import pytest

from tests.support.mask_corpus import (
    CHECKSUMMED_PII,
    CLASSES,
    CONTEXT_DEPENDENT,
    FORMATS,
    FORMATTED_SECRETS,
    NEGATIVE_KINDS,
    OPTIONAL_CLASSES,
    CorpusRecord,
    Negative,
    Span,
    check_record,
    generate,
)

SEED = 4
SIZE = 2000
MIN_SPANS_PER_CLASS = 50
MIN_NEGATIVES_PER_KIND = 50
STRICT_RECALL = 0.99
CONTEXT_RECALL = 0.95
MAX_FP_RATE = 0.01
MAX_TOUCHED_RATE = 0.01
EXAMPLES = 5
CONTEXT_CHARS = 40


class Finding(Protocol):
    start: int
    end: int
    cls: str


# --------------------------------------------------------------------------------------------------------------------
# Scoring


@dataclass
class ClassScore:
    n: int = 0
    recalled: int = 0
    agreed: int = 0  # recalled spans where an overlapping finding has the same class (information only)
    misses: list[tuple[int, Span]] = field(default_factory=list)

    @property
    def recall(self) -> float:
        return self.recalled / self.n if self.n else 0.0


@dataclass
class KindScore:
    n: int = 0
    hit: int = 0
    examples: list[tuple[int, Negative, Finding]] = field(default_factory=list)


@dataclass
class Score:
    corpus: Sequence[CorpusRecord] = field(repr=False)
    enabled: frozenset[str]
    classes: dict[str, ClassScore]
    kinds: dict[str, KindScore]
    clean: int = 0  # records without a positive of an enabled class
    touched: list[tuple[int, Finding]] = field(default_factory=list)
    findings: int = 0
    findings_by_cls: collections.Counter[str] = field(default_factory=collections.Counter)

    @property
    def negatives(self) -> int:
        return sum(k.n for k in self.kinds.values())

    @property
    def hits(self) -> int:
        return sum(k.hit for k in self.kinds.values())

    @property
    def fp_rate(self) -> float:
        return self.hits / self.negatives if self.negatives else 0.0

    @property
    def touched_rate(self) -> float:
        return len(self.touched) / self.clean if self.clean else 0.0


def detect(detector: Any, corpus: Sequence[CorpusRecord]) -> list[list[Finding]]:
    out: list[list[Finding]] = []
    for i, rec in enumerate(corpus):
        found = list(detector.find(rec.text))
        for f in found:
            ok = isinstance(f.start, int) and isinstance(f.end, int) and 0 <= f.start < f.end <= len(rec.text)
            assert ok and isinstance(f.cls, str), f"record #{i}: finding with bad offsets or class: {f!r}"
        out.append(found)
    return out


def score(corpus: Sequence[CorpusRecord], findings: Sequence[Sequence[Finding]], enabled: frozenset[str]) -> Score:
    s = Score(
        corpus, enabled, {c: ClassScore() for c in CLASSES if c in enabled}, {k: KindScore() for k in NEGATIVE_KINDS}
    )
    for i, (rec, found) in enumerate(zip(corpus, findings, strict=True)):
        s.findings += len(found)
        s.findings_by_cls.update(f.cls for f in found)
        covered = bytearray(len(rec.text))
        for f in found:
            covered[f.start : f.end] = b"\x01" * (f.end - f.start)
        spans = [sp for sp in rec.spans if sp.cls in enabled]
        for sp in spans:
            cs = s.classes[sp.cls]
            cs.n += 1
            if covered.count(0, sp.start, sp.end) == 0:
                cs.recalled += 1
                cs.agreed += any(f.cls == sp.cls and f.start < sp.end and sp.start < f.end for f in found)
            else:
                cs.misses.append((i, sp))
        for ng in rec.negatives:
            ks = s.kinds[ng.kind]
            ks.n += 1
            if covered.count(0, ng.start, ng.end) != ng.end - ng.start:
                ks.hit += 1
                hit_by = next(f for f in found if f.start < ng.end and ng.start < f.end)
                ks.examples.append((i, ng, hit_by))
        if not spans:
            s.clean += 1
            if found:
                s.touched.append((i, found[0]))
    return s


# --------------------------------------------------------------------------------------------------------------------
# The scorecard


def around(text: str, start: int, end: int) -> str:
    """``text[start:end]`` in brackets with CONTEXT_CHARS either side, as a one-line repr."""
    lo, hi = max(0, start - CONTEXT_CHARS), min(len(text), end + CONTEXT_CHARS)
    return repr(text[lo:start] + "[[" + text[start:end] + "]]" + text[end:hi])


def clip(s: str, n: int = 60) -> str:
    return repr(s if len(s) <= n else s[: n - 3] + "...")


def scorecard(s: Score, classes: Iterable[str] | None = None) -> str:
    corpus = s.corpus
    lines = [
        f"corpus: {len(corpus)} records, seed {SEED}; findings: {s.findings} {dict(s.findings_by_cls.most_common())}"
    ]
    lines.append("")
    lines.append(f"{'class':<26}{'n':>6}{'recall':>9}{'agree':>9}{'missed':>8}")
    for cls in classes or s.classes:
        cs = s.classes[cls]
        agree = cs.agreed / cs.recalled if cs.recalled else 0.0
        lines.append(f"{cls:<26}{cs.n:>6}{cs.recall:>9.1%}{agree:>9.1%}{len(cs.misses):>8}")
        for i, sp in cs.misses[:EXAMPLES]:
            rec = corpus[i]
            where = around(rec.text, sp.start, sp.end)
            lines.append(f"      missed [#{i} {rec.fmt}] {clip(rec.text[sp.start : sp.end])} in {where}")
    lines.append("")
    lines.append(f"hard negatives: {s.negatives}, hit: {s.hits} ({s.fp_rate:.2%})")
    lines.append(f"{'kind':<26}{'n':>6}{'hit':>6}{'rate':>9}")
    for kind, ks in s.kinds.items():
        rate = ks.hit / ks.n if ks.n else 0.0
        lines.append(f"{kind:<26}{ks.n:>6}{ks.hit:>6}{rate:>9.1%}")
        for i, ng, f in ks.examples[:EXAMPLES]:
            text = corpus[i].text
            hit = f"{f.cls} {clip(text[f.start : f.end], 40)}"
            where = around(text, ng.start, ng.end)
            lines.append(f"      hit [#{i} {corpus[i].fmt}] {clip(text[ng.start : ng.end], 40)} by {hit} in {where}")
    lines.append("")
    lines.append(f"records without positives: {s.clean}, touched: {len(s.touched)} ({s.touched_rate:.2%})")
    for i, f in s.touched[:EXAMPLES]:
        text = corpus[i].text
        where = around(text, f.start, f.end)
        lines.append(f"      touched [#{i} {corpus[i].fmt}] {f.cls} {clip(text[f.start : f.end], 40)} in {where}")
    return "\n".join(lines)


def below(s: Score, classes: Sequence[str], target: float) -> list[str]:
    return [f"{c} {s.classes[c].recall:.1%}" for c in classes if s.classes[c].recall < target]


# --------------------------------------------------------------------------------------------------------------------
# Fixtures: the corpus and each detector's findings, computed once per module


@pytest.fixture(scope="module")
def corpus() -> list[CorpusRecord]:
    return generate(SEED, SIZE)


@pytest.fixture(scope="module")
def default_score(corpus: list[CorpusRecord]) -> Score:
    from portcullis.masking import default_detector

    enabled = frozenset(CLASSES) - frozenset(OPTIONAL_CLASSES)
    return score(corpus, detect(default_detector(), corpus), enabled)


@pytest.fixture(scope="module")
def ip_score(corpus: list[CorpusRecord]) -> Score:
    from portcullis.masking import default_detector

    return score(corpus, detect(default_detector(include=("ip_address",)), corpus), frozenset(CLASSES))


# --------------------------------------------------------------------------------------------------------------------
# The corpus itself


def test_generator_is_deterministic() -> None:
    first = generate(SEED, 200)
    assert first == generate(SEED, 200)
    assert first != generate(SEED + 1, 200)


def test_labels_are_exact_and_consistent(corpus: list[CorpusRecord]) -> None:
    problems = [f"#{i} {rec.fmt}: {p}" for i, rec in enumerate(corpus) for p in check_record(rec)]
    assert not problems, "\n".join(problems[:20])


def test_corpus_mix(corpus: list[CorpusRecord]) -> None:
    clean = sum(1 for r in corpus if not r.spans and not r.negatives)
    positive = sum(1 for r in corpus if r.spans)
    hard = sum(1 for r in corpus if r.negatives and not r.spans)
    assert abs(clean / len(corpus) - 0.5) < 0.05, clean
    assert abs(positive / len(corpus) - 0.25) < 0.05, positive
    assert abs(hard / len(corpus) - 0.25) < 0.05, hard
    assert {r.fmt for r in corpus} == set(FORMATS)
    lengths = [len(r.text) for r in corpus]
    assert min(lengths) >= 100 and max(lengths) <= 12_000 and 500 <= statistics.median(lengths) <= 3000
    assert len({r.text for r in corpus}) == len(corpus), "duplicate records"


def test_every_class_and_kind_is_well_represented(corpus: list[CorpusRecord]) -> None:
    spans = collections.Counter(sp.cls for r in corpus for sp in r.spans)
    kinds = collections.Counter(ng.kind for r in corpus for ng in r.negatives)
    thin = [f"{c}: {spans[c]}" for c in CLASSES if spans[c] < MIN_SPANS_PER_CLASS]
    thin += [f"{k}: {kinds[k]}" for k in NEGATIVE_KINDS if kinds[k] < MIN_NEGATIVES_PER_KIND]
    assert not thin, f"too few labelled examples: {thin}"
    for cls in CLASSES:  # values are random per record, not a few repeated literals
        texts = [r.text[sp.start : sp.end] for r in corpus for sp in r.spans if sp.cls == cls]
        assert len(set(texts)) >= 0.9 * len(texts), cls


# --------------------------------------------------------------------------------------------------------------------
# The targets


def require(ok: bool, headline: str, s: Score, classes: Iterable[str] | None = None) -> None:
    """Fail with the headline and the whole scorecard (no traceback: the scorecard is what the reader needs)."""
    if not ok:
        pytest.fail(f"{headline}\n\n{scorecard(s, classes)}", pytrace=False)


def test_recall_formatted_secrets(default_score: Score) -> None:
    missing = below(default_score, FORMATTED_SECRETS, STRICT_RECALL)
    require(not missing, f"recall below {STRICT_RECALL:.0%}: {missing}", default_score)


def test_recall_checksummed_pii(default_score: Score) -> None:
    missing = below(default_score, CHECKSUMMED_PII, STRICT_RECALL)
    require(not missing, f"recall below {STRICT_RECALL:.0%}: {missing}", default_score)


def test_recall_context_dependent(default_score: Score) -> None:
    missing = below(default_score, CONTEXT_DEPENDENT, CONTEXT_RECALL)
    require(not missing, f"recall below {CONTEXT_RECALL:.0%}: {missing}", default_score)


def test_false_positives_on_hard_negatives(default_score: Score) -> None:
    s = default_score
    require(s.fp_rate <= MAX_FP_RATE, f"{s.hits}/{s.negatives} hard negatives hit ({s.fp_rate:.2%})", s)


def test_records_without_positives_untouched(default_score: Score) -> None:
    s = default_score
    headline = f"{len(s.touched)}/{s.clean} records without positives touched ({s.touched_rate:.2%})"
    require(s.touched_rate <= MAX_TOUCHED_RATE, headline, s)


def test_ip_addresses_not_masked_by_default(default_score: Score) -> None:
    """Records whose only positives are IP addresses also count as records without positives here."""
    optional = {c: n for c, n in default_score.findings_by_cls.items() if c in OPTIONAL_CLASSES}
    require(not optional, f"optional classes found without being enabled: {optional}", default_score)


def test_ip_address_recall_when_enabled(ip_score: Score) -> None:
    missing = below(ip_score, OPTIONAL_CLASSES, STRICT_RECALL)
    require(not missing, f"recall below {STRICT_RECALL:.0%}: {missing}", ip_score, OPTIONAL_CLASSES)


def test_scorecard(default_score: Score) -> None:
    """Not a target: prints the whole scorecard, class agreement included (see it with ``pytest -rP``)."""
    print(scorecard(default_score))


HELD_OUT_SEED = 21  # the detectors were tuned against SEED's corpus; this one was only ever scored


def test_targets_hold_on_a_corpus_the_rules_were_not_tuned_on() -> None:
    from portcullis.masking import default_detector

    held = generate(HELD_OUT_SEED, SIZE)
    s = score(held, detect(default_detector(), held), frozenset(CLASSES) - frozenset(OPTIONAL_CLASSES))
    missing = below(s, [*FORMATTED_SECRETS, *CHECKSUMMED_PII], STRICT_RECALL)
    missing += below(s, CONTEXT_DEPENDENT, CONTEXT_RECALL)
    ok = not missing and s.fp_rate <= MAX_FP_RATE and s.touched_rate <= MAX_TOUCHED_RATE
    require(ok, f"held-out seed {HELD_OUT_SEED}: {missing}, FP {s.fp_rate:.2%}, touched {s.touched_rate:.2%}", s)
