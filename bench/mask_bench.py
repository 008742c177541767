"""Masking benchmark: the masker alone on mixed tool output, and the mask stage's CPU on a 10 KB result.

    .venv/bin/python bench/mask_bench.py [--repeats 7] [--name NAME]

Measured in one process, one core, medians of ``--repeats`` runs (these machines are noisy):

* ``detector``: ``Detector.find_bytes`` over the labelled corpus (tests/support/mask_corpus.py: logs, .env, YAML,
  SQL tables, stack traces, JSON rows, e-mails, CSV, code; half clean), joined the way the masker joins strings;
* ``masker``: ``Masker.mask`` on every corpus record as a ``tools/call`` result (walk, scan, replace, write back);
* ``baseline_re``: the same rule patterns run with Python's ``re`` one after another (no set prefilter, no
  validators) — the "plain Python re rule set" to compare against, measured in the same run;
* ``stage_*``: ``MaskStage.on_response`` on a 10 KB ``tools/call`` result — clean text, mixed output with a few
  secrets (bench/upstream_fast.py ``mixed10k``), and 10 KB of JSON rows as ``structuredContent`` plus its text twin —
  including the re-encoding of a changed message: the gateway's extra CPU for masking that result.

Writes bench/results/mask-<name>.json and prints a table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import orjson

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCH))

from upstream_fast import _mixed  # noqa: E402

from portcullis.config.model import MaskingConfig  # noqa: E402
from portcullis.flow import Direction, Flow  # noqa: E402
from portcullis.masking.rules import BUILTIN  # noqa: E402
from portcullis.pipeline.mask import MaskStage, build_masker  # noqa: E402
from portcullis.wire.jsonrpc import Kind, Message  # noqa: E402
from portcullis.wire.mcp import Era  # noqa: E402
from tests.support.mask_corpus import generate  # noqa: E402

TARGET_MB_S = 50.0
TARGET_STAGE_US = 100.0


def _median_time(fn: Any, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _python_re_rules() -> list[re.Pattern[str]]:
    out = []
    for r in BUILTIN:
        p = r.pattern.replace(r"\x{80}-\x{10FFFF}", "\x80-\U0010ffff")
        out.append(re.compile(p))
    return out


def _tool_result(text: str) -> bytes:
    return orjson.dumps({"jsonrpc": "2.0", "id": 1, "result": {"content": [{"type": "text", "text": text}]}})


def _rows_result(n_bytes: int) -> bytes:
    rows = []
    i = 0
    while len(orjson.dumps(rows)) < n_bytes // 2:
        rows.append(
            {
                "id": 1000 + i,
                "name": f"Customer {i}",
                "email": f"customer{i}@example.com" if i % 10 == 0 else None,
                "plan": "pro" if i % 3 else "free",
                "created": f"2026-11-{1 + i % 28:02d}T10:00:00Z",
                "note": "renewal pending" if i % 4 else "ok",
            }
        )
        i += 1
    sc = {"rows": rows}
    body = {"content": [{"type": "text", "text": orjson.dumps(sc).decode()}], "structuredContent": sc}
    return orjson.dumps({"jsonrpc": "2.0", "id": 1, "result": body})


def _stage_us(stage: MaskStage, raw: bytes, repeats: int, inner: int = 200) -> tuple[float, bool]:
    req = Message(b"{}", {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "x"}}, Kind.REQUEST)
    changed = False

    def run() -> None:
        nonlocal changed
        for _ in range(inner):
            flow = Flow("bench", Era.SESSION, Direction.C2S, req)
            body = orjson.loads(raw)  # what the edge hands the pipeline: a parsed message (parsing is not masking)
            flow.response = Message(raw, body, Kind.RESULT)
            t = time.perf_counter()
            stage.on_response(flow)
            run.spent += time.perf_counter() - t  # type: ignore[attr-defined]
            changed = flow.masked is not None

    samples = []
    for _ in range(repeats):
        run.spent = 0.0  # type: ignore[attr-defined]
        run()
        samples.append(run.spent / inner * 1e6)  # type: ignore[attr-defined]
    return statistics.median(samples), changed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--records", type=int, default=2000, help="corpus records")
    ap.add_argument("--name", default=dt.datetime.now().strftime("%Y%m%d-%H%M%S"))
    args = ap.parse_args(argv)

    masker = build_masker(MaskingConfig())
    assert masker is not None
    plan = masker.plan("bench", frozenset())
    assert plan.detector is not None
    corpus = generate(n=args.records)
    texts = [r.text for r in corpus]
    joined = "\x00".join(texts).encode()
    size = len(joined)
    out: dict[str, Any] = {"corpus_records": len(texts), "corpus_bytes": size, "repeats": args.repeats}

    det = plan.detector
    det.find_bytes(joined)  # warm
    t_det = _median_time(lambda: det.find_bytes(joined), args.repeats)
    out["detector_mb_s"] = size / t_det / 1e6

    raws = [_tool_result(t) for t in texts]

    def mask_all() -> None:
        for raw in raws:
            masker.mask(orjson.loads(raw), "result", plan, "bench")

    def parse_all() -> None:
        for raw in raws:
            orjson.loads(raw)

    t_mask = _median_time(mask_all, args.repeats) - _median_time(parse_all, args.repeats)
    out["masker_mb_s"] = size / t_mask / 1e6

    rules = _python_re_rules()
    sample = "\x00".join(texts[: max(50, len(texts) // 10)])

    def re_all() -> None:
        for rx in rules:
            for _m in rx.finditer(sample):
                pass

    t_re = _median_time(re_all, max(3, args.repeats // 2))
    out["baseline_python_re_mb_s"] = len(sample.encode()) / t_re / 1e6

    stage = MaskStage(masker)
    clean = _tool_result(
        ("2026-11-24T12:00:00Z INFO request served path=/api/v1/items status=200 dur_ms=12\n" * 200)[:10_000]
    )
    mixed = _tool_result(_mixed(10_000))
    rows = _rows_result(10_000)
    for label, raw in (("clean", clean), ("mixed", mixed), ("rows", rows)):
        us, changed = _stage_us(stage, raw, args.repeats)
        out[f"stage_{label}_10k_us"] = us
        out[f"stage_{label}_10k_bytes"] = len(raw)
        out[f"stage_{label}_10k_changed"] = changed

    path = BENCH / "results" / f"mask-{args.name}.json"
    path.write_text(json.dumps({"when": dt.datetime.now().isoformat(), **out}, indent=2))
    print("| measure | value | target |\n|---|---|---|")
    print(f"| detector alone, corpus ({size / 1e6:.1f} MB) | {out['detector_mb_s']:.0f} MB/s | |")
    print(f"| masker (walk+scan+replace), per record | {out['masker_mb_s']:.0f} MB/s | ≥ {TARGET_MB_S:.0f} MB/s |")
    print(f"| baseline: same patterns, Python re | {out['baseline_python_re_mb_s']:.1f} MB/s | |")
    for label in ("clean", "mixed", "rows"):
        ch = "masked" if out[f"stage_{label}_10k_changed"] else "unchanged"
        print(
            f"| mask stage, 10 KB {label} ({ch}) | {out[f'stage_{label}_10k_us']:.0f} µs | ≤ {TARGET_STAGE_US:.0f} µs |"
        )
    print(f"\nresults: {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
