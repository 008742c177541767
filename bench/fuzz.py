"""Coverage-guided fuzzing (atheris, libFuzzer) of what hostile input reaches first: the JSON-RPC parser with the
2026-07-28 header ladder, the SSE parser, and the masker. ``make fuzz`` (or ``python bench/fuzz.py --seconds N``)
runs each target in its own process for N seconds and prints one line per target: executions, coverage, crashes.

A crash is any exception but the documented refusals (``ProtocolError``, ``SSEParseError``, ``MaskingError``), and
an input that takes longer than ``-timeout`` seconds (a hang). libFuzzer writes a crashing input to
``bench/results/fuzz/crash-*``. The hypothesis properties in tests/unit/test_fuzz_properties.py run in CI; this is
the longer run, recorded in docs/security.md.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import subprocess
import sys
from pathlib import Path

TARGETS = ("wire", "sse", "mask")
OUT = Path(__file__).resolve().parent / "results" / "fuzz"


def target_wire() -> None:
    import atheris

    with atheris.instrument_imports():
        from portcullis import errors
        from portcullis.wire.jsonrpc import Kind, parse_body
        from portcullis.wire.mcp import check_stateless_request, decode_header_value, duplicated_routing_header

    def one(data: bytes) -> None:
        # the input: up to three header values, one per line, then a blank line, then the body
        head, _, body = data.partition(b"\n\n")
        values = [*head.decode("utf-8", "replace").split("\n")[:3], "", "", ""]
        headers = {"Mcp-Method": values[0], "Mcp-Name": values[1], "MCP-Protocol-Version": values[2]}
        decode_header_value(headers["Mcp-Name"])
        try:
            parsed = parse_body(body)
        except errors.ProtocolError:
            return
        for msg in parsed if isinstance(parsed, list) else [parsed]:
            if msg.kind is Kind.REQUEST:
                with contextlib.suppress(errors.ProtocolError):
                    check_stateless_request(msg, headers, duplicated_routing_header(list(headers.items())))

    atheris.Setup(sys.argv, one)
    atheris.Fuzz()


def target_sse() -> None:
    import atheris

    with atheris.instrument_imports():
        from portcullis.wire.sse import SSEParseError, SSEParser

    def one(data: bytes) -> None:
        fdp = atheris.FuzzedDataProvider(data)
        parser = SSEParser(max_event=fdp.ConsumeIntInRange(16, 4096))
        try:
            while fdp.remaining_bytes():
                parser.feed(fdp.ConsumeBytes(fdp.ConsumeIntInRange(1, 64)))
        except SSEParseError:
            return

    atheris.Setup(sys.argv, one)
    atheris.Fuzz()


def target_mask() -> None:
    import atheris
    import orjson

    with atheris.instrument_imports():
        from portcullis.config.model import MaskingConfig
        from portcullis.masking import MaskingError
        from portcullis.pipeline.mask import build_masker

    masker = build_masker(MaskingConfig())
    assert masker is not None
    plan = masker.plan("fuzz", frozenset())

    def one(data: bytes) -> None:
        try:
            value = orjson.loads(data)
        except orjson.JSONDecodeError:
            value = data.decode("utf-8", "replace")  # as a text result
        body = {
            "result": {"content": [{"type": "text", "text": orjson.dumps(value).decode()}], "structuredContent": value}
        }
        try:
            masker.mask(body, "result", plan, "session")
        except MaskingError:
            return

    atheris.Setup(sys.argv, one)
    atheris.Fuzz()


SEEDS = {  # where libFuzzer starts: it cannot learn JSON through orjson (C, not instrumented) on its own
    "wire": [
        b'tools/call\necho\n2026-07-28\n\n{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo",'
        b'"arguments":{"a":1},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}',
        b'\n\n\n\n[{"jsonrpc":"2.0","id":"x","result":{}},{"jsonrpc":"2.0","method":"notifications/x"}]',
        b'ping\n=?base64?ZWNobw==?=\n2025-11-25\n\n{"jsonrpc":"2.0","id":2,"method":"ping"}',
    ],
    "sse": [b'\x40\x00event: message\nid: 7\ndata: {"a":1}\n\n: ping\nretry: 10\ndata: x\r\ndata: y\n\n'],
    "mask": [
        b'{"card":"4111 1111 1111 1111","email":"ada@example.com","key":"AKIAIOSFODNN7EXAMPLE","n":[1,2,{"x":"y"}]}',
        b'"password=hunter2 token ghp_0123456789abcdefghijklmnopqrstuvwxyz12 +1 415 555 0100"',
        b'{"config":"DATABASE_URL=postgresql://app:s3cr3t@db:5432/app","iban":"DE89 3704 0044 0532 0130 00"}',
    ],
}
DICT = ['"jsonrpc"', '"2.0"', '"id"', '"method"', '"params"', '"result"', '"error"', '"tools/call"', '"_meta"',
        "{", "}", "[", "]", ":", ",", "null", "true", "false", '"name"', '"arguments"', "data: ", "event: ", "id: ",
        "\n\n", "password=", "@example.com", "4111 1111 1111 1111", "AKIA"]  # fmt: skip


def _escaped(word: str) -> str:
    """A libFuzzer dictionary entry: printable ASCII as it is, everything else (and quote, backslash) as \\xNN."""
    return "".join(chr(b) if 32 <= b < 127 and b not in (34, 92) else f"\\x{b:02X}" for b in word.encode())


def run(target: str, seconds: int) -> str:
    corpus = OUT / f"corpus-{target}"
    corpus.mkdir(parents=True, exist_ok=True)
    for i, seed in enumerate(SEEDS[target]):
        (corpus / f"seed-{i}").write_bytes(seed)
    words = OUT / "json.dict"
    words.write_text("".join(f'kw{i}="{_escaped(w)}"\n' for i, w in enumerate(DICT)))
    argv = [
        sys.executable,
        __file__,
        "--target",
        target,
        str(corpus),
        f"-max_total_time={seconds}",
        "-timeout=10",
        "-rss_limit_mb=2048",
        f"-artifact_prefix={OUT}/",
        "-print_final_stats=1",
        f"-dict={words}",
    ]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 120)
    log = proc.stderr
    (OUT / f"{target}.log").write_text(log)
    execs = re.findall(r"stat::number_of_executed_units:\s+(\d+)", log)
    cov = re.findall(r"cov: (\d+) ft: (\d+)", log)
    crashed = proc.returncode != 0
    return (
        f"{target}: {'CRASH (see ' + str(OUT) + ')' if crashed else 'no crash, no hang'}; "
        f"{execs[-1] if execs else '?'} executions in {seconds} s; "
        f"coverage {cov[-1][0] if cov else '?'} edges, {cov[-1][1] if cov else '?'} features; "
        f"corpus {len(list(corpus.iterdir()))} inputs"
    )


def main() -> None:
    if "--target" in sys.argv:
        i = sys.argv.index("--target")
        name = sys.argv[i + 1]
        del sys.argv[i : i + 2]
        {"wire": target_wire, "sse": target_sse, "mask": target_mask}[name]()
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=int, default=300, help="per target")
    ap.add_argument("targets", nargs="*", default=list(TARGETS))
    args = ap.parse_args()
    for t in args.targets:
        print(run(t, args.seconds), flush=True)


if __name__ == "__main__":
    main()
