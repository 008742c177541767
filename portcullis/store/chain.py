"""The audit chain: every record carries its predecessor's hash and its own, so any change to the trail shows.

``hash = SHA-256(prev_hash || the record's fields, each length-prefixed and type-tagged)``, in the order of
``CHAIN_FIELDS``. The writer thread computes it in insertion (``seq``) order; ``portcullis audit verify`` recomputes
it and names the first record that was removed, inserted, re-ordered or altered. Checkpoints sign (Ed25519) the
hash at a ``seq`` so that a cut-off tail, or a rewritten chain, is caught too.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from typing import Any

GENESIS = b"\x00" * 32
CHAIN_FIELDS = (
    "ts_ns",
    "server",
    "session_id",
    "direction",
    "kind",
    "method",
    "msg_id",
    "flow_id",
    "payload",
    "outcome",
    "latency_us",
    "detail",
    "principal",
    "decision",
    "rule",
    "policy_version",
    "masked",
    "sealed",
)
CHECKPOINT_DOMAIN = b"portcullis audit checkpoint v1\x00"


def _field(h: Any, value: Any) -> None:
    if value is None:
        h.update(b"N")
    elif isinstance(value, bytes | bytearray | memoryview):
        b = bytes(value)
        h.update(b"B" + struct.pack(">Q", len(b)) + b)
    elif isinstance(value, bool):
        h.update(b"T" if value else b"F")
    elif isinstance(value, int):
        s = str(value).encode()
        h.update(b"I" + struct.pack(">Q", len(s)) + s)
    else:
        s = str(value).encode("utf-8", "surrogatepass")
        h.update(b"S" + struct.pack(">Q", len(s)) + s)


def digest(prev: bytes, values: Sequence[Any]) -> bytes:
    """The hash of one record given its predecessor's hash and its field values (``CHAIN_FIELDS`` order)."""
    h = hashlib.sha256(prev)
    for v in values:
        _field(h, v)
    return h.digest()


def checkpoint_message(seq: int, chain_hash: bytes, ts_ns: int) -> bytes:
    return CHECKPOINT_DOMAIN + struct.pack(">QQ", seq, ts_ns) + chain_hash
