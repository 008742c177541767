"""How a finding is replaced: a typed label, a partial mask that keeps a short hint, or a keyed pseudonym.

Every replacement is a pure function of (mode, class, value, session key), so the same value masks the same way
everywhere in a message — which keeps ``structuredContent`` and its text twin in step — and, for pseudonyms, the
same way for the whole session, so an agent can still tell two customers apart without seeing either. Replacements
never contain a quote, a backslash or NUL, so they are safe inside JSON strings and the engine's NUL-joined text.
"""

from __future__ import annotations

import hashlib
import hmac

from portcullis.masking.classes import CLASSES

MODES = ("label", "partial", "pseudonym")
NO_TAIL = frozenset({"password_assignment", "uri_credentials", "high_entropy_secret", "http_auth"})


def label(cls: str) -> bytes:
    return b"[REDACTED:" + cls.encode() + b"]"


def _mask_chars(value: bytes, keep_last: int, keep: bytes = b" -./()+") -> bytes:
    """Stars for every letter and digit except the last ``keep_last`` of them; separators stay (format-preserving)."""
    out = bytearray()
    alnum_total = sum(1 for c in value if chr(c).isalnum())
    seen = 0
    for c in value:
        if c in keep:
            out.append(c)
            continue
        seen += 1
        out.append(c if seen > alnum_total - keep_last else 42)  # '*'
    return bytes(out)


def partial(cls: str, value: bytes) -> bytes:
    """Keep a short hint: the last digits of a card, the domain of an address, a token's public prefix."""
    if cls in ("credit_card", "us_ssn", "phone_number", "iban"):
        keep = 2 if cls == "phone_number" else 4
        if len(value) < 8:
            return label(cls)
        masked = _mask_chars(value, keep)
        if cls == "iban":
            masked = value[:2] + masked[2:]
        return masked
    if cls == "email":
        at = value.rfind(b"@")
        first = value.decode("utf-8", "replace")[:1].encode()  # one character, not one byte of one
        return first + b"***" + value[at:] if at > 0 else label(cls)
    if cls in NO_TAIL:
        return label(cls)  # a password's last characters are part of what little entropy it has
    info = CLASSES.get(cls)
    hint = b""
    if info is not None:
        for prefix in info.hints:
            p = prefix.encode()
            if value.startswith(p):
                hint = p
                break
    if len(value) >= 16:
        tail = value.decode("utf-8", "replace")[-4:].encode()
        return b"[REDACTED:" + cls.encode() + b" " + hint + b"..." + tail + b"]"
    return label(cls)


def pseudonym(cls: str, value: bytes, key: bytes) -> bytes:
    """A keyed, session-stable stand-in; an e-mail address stays an e-mail address (schemas keep validating)."""
    digest = hmac.new(key, cls.encode() + b"\x00" + value, hashlib.sha256).hexdigest()[:12].encode()
    if cls == "email":
        return b"user-" + digest + b"@masked.invalid"
    return b"[" + cls.encode() + b"#" + digest + b"]"  # not "class:digest", which reads like an assignment


def replacement(mode: str, cls: str, value: bytes, key: bytes) -> bytes:
    if mode == "partial":
        out = partial(cls, value)
    elif mode == "pseudonym":
        out = pseudonym(cls, value, key)
    else:
        out = label(cls)
    return out.replace(b'"', b"").replace(b"\\", b"").replace(b"\x00", b"")
