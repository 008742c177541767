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
    "chain",
)


def digest(prev: bytes, values: Sequence[Any]) -> bytes:
    """The hash of one record given its predecessor's hash and its field values (``CHAIN_FIELDS`` order).

    Each field is type-tagged and length-prefixed (``N`` none, ``I<n>;`` integer, ``B<len>:`` bytes, ``S<len>:``
    UTF-8 text), so no two different records encode alike; one buffer, one SHA-256 call."""
    parts = [prev]
    add = parts.append
    for v in values:
        t = type(v)
        if v is None:
            add(b"N")
        elif t is bytes or t is memoryview or t is bytearray:  # a driver may hand binary back as a view
            add(b"B%d:" % len(v))
            add(bytes(v))
        elif t is int:
            add(b"I%d;" % v)
        elif t is not str:
            raise TypeError(f"a record field of type {t.__name__} has no chain encoding")
        else:
            b = str(v).encode("utf-8", "surrogatepass")
            add(b"S%d:" % len(b))
            add(b)
    return hashlib.sha256(b"".join(parts)).digest()


# the columns of a sessions row that its chained session_open record carries a copy of (verify checks the table)
SESSION_CHAINED = ("id", "server", "era", "protocol_version", "client_info", "principal", "upstream_session")
CHECKPOINT_DOMAIN_V2 = b"portcullis audit checkpoint v2\x00"


def checkpoint_message(chain: str, counter: int, prev_link: bytes, seq: int, chain_hash: bytes, ts_ns: int) -> bytes:
    """What a checkpoint signs: its chain, its place in that chain's run of checkpoints (counter and a link to the
    previous one's signature), the record it seals and that record's chain hash."""
    name = chain.encode()
    return (
        CHECKPOINT_DOMAIN_V2
        + struct.pack(">H", len(name))
        + name
        + struct.pack(">QQQ", counter, seq, ts_ns)
        + prev_link
        + chain_hash
    )


def link(signature: bytes) -> bytes:
    return hashlib.sha256(signature).digest()
