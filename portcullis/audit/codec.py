"""One JSON form for a record and a checkpoint, shared by every export (JSON-lines files, webhook, OTLP bodies),
the session document and ``portcullis audit verify --file``.

It is lossless for the fields the chain hashes (:data:`portcullis.store.chain.CHAIN_FIELDS`), so a copy can be
verified on its own: ``payload`` is the message text when it is UTF-8 (it nearly always is: JSON-RPC), otherwise
``payload_b64``; ``sealed`` (the forensic copy) is base64; hashes and signatures are hex. ``ts`` is the time in
RFC 3339 for people and is not hashed.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Mapping
from typing import Any

FORMAT = 1  # the "v" of every exported line; readers refuse newer ones by name


def rfc3339(ns: int) -> str:
    return dt.datetime.fromtimestamp(ns / 1e9, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _hex(b: Any) -> str | None:
    return None if b is None else bytes(b).hex()


def record_json(r: Any, seq: int | None = None) -> dict[str, Any]:
    """A record (a :class:`portcullis.flow.Record` or a row mapping) as a JSON-ready dict."""
    get: Any = r.get if isinstance(r, Mapping) else (lambda k, d=None: getattr(r, k, d))
    if seq is None:
        seq = get("seq")
    out: dict[str, Any] = {"type": "record", "v": FORMAT, "seq": seq, "ts": rfc3339(int(get("ts_ns")))}
    for k in ("ts_ns", "chain", "server", "session_id", "direction", "kind", "method", "msg_id", "flow_id"):
        out[k] = get(k)
    for k in ("outcome", "latency_us", "detail", "principal", "decision", "rule", "policy_version", "masked"):
        out[k] = get(k)
    payload = get("payload")
    if payload is not None:
        payload = bytes(payload)
        try:
            out["payload"] = payload.decode("utf-8")
        except UnicodeDecodeError:
            out["payload_b64"] = base64.b64encode(payload).decode("ascii")
    else:
        out["payload"] = None
    sealed = get("sealed")
    out["sealed_b64"] = None if sealed is None else base64.b64encode(bytes(sealed)).decode("ascii")
    out["prev_hash"] = _hex(get("prev_hash"))
    out["hash"] = _hex(get("hash"))
    return out


def record_columns(d: Mapping[str, Any]) -> dict[str, Any]:
    """The store's column values back from :func:`record_json` (bytes where the store keeps bytes)."""
    _check(d, "record")
    out = {k: d.get(k) for k in ("seq", "ts_ns", "chain", "server", "session_id", "direction", "kind", "method")}
    for k in ("msg_id", "flow_id", "outcome", "latency_us", "detail", "principal", "decision", "rule"):
        out[k] = d.get(k)
    out["policy_version"] = d.get("policy_version")
    out["masked"] = d.get("masked")
    if d.get("payload_b64") is not None:
        out["payload"] = base64.b64decode(d["payload_b64"])
    else:
        p = d.get("payload")
        out["payload"] = None if p is None else p.encode("utf-8", "surrogatepass")
    s = d.get("sealed_b64")
    out["sealed"] = None if s is None else base64.b64decode(s)
    out["prev_hash"] = None if d.get("prev_hash") is None else bytes.fromhex(d["prev_hash"])
    out["hash"] = None if d.get("hash") is None else bytes.fromhex(d["hash"])
    return out


def checkpoint_json(c: Any) -> dict[str, Any]:
    get: Any = c.get if isinstance(c, Mapping) else (lambda k, d=None: getattr(c, k, d))
    return {
        "type": "checkpoint",
        "v": FORMAT,
        "chain": get("chain"),
        "counter": get("counter"),
        "seq": get("seq"),
        "ts": rfc3339(int(get("ts_ns"))),
        "ts_ns": get("ts_ns"),
        "key_id": get("key_id"),
        "hash": _hex(get("hash")),
        "prev_link": _hex(get("prev_link")),
        "signature": _hex(get("signature")),
    }


def checkpoint_columns(d: Mapping[str, Any]) -> dict[str, Any]:
    _check(d, "checkpoint")
    out = {k: d.get(k) for k in ("chain", "counter", "seq", "ts_ns", "key_id")}
    for k in ("hash", "prev_link", "signature"):
        out[k] = None if d.get(k) is None else bytes.fromhex(d[k])
    return out


def _check(d: Mapping[str, Any], kind: str) -> None:
    if d.get("type") != kind:
        raise ValueError(f"expected a {kind} object, got type {d.get('type')!r}")
    v = d.get("v")
    if not isinstance(v, int) or v > FORMAT:
        raise ValueError(f"unsupported {kind} format version {v!r} (this portcullis reads up to {FORMAT})")
