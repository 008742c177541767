"""Structure-aware walking of MCP messages: every string that can carry text, and nothing the protocol needs intact.

The walk visits every string value under a message's ``result``, ``error`` or ``params`` — tool results (``content``
text, embedded resources, ``structuredContent``), ``resources/read`` contents, prompt messages, error messages and
data, log and progress notifications, sampling and elicitation requests, list results — except:

- protocol plumbing: ``_meta``, ``progressToken``, cursors, ``requestState``, task ids, ``protocolVersion``,
  ``mimeType``, ``type``, ``role`` and the JSON Schemas of tools and elicitations (masking them would break the
  protocol, and they carry no response data);
- binary: image and audio ``data`` and resource ``blob`` are skipped, unless the blob's MIME type is text-like, in
  which case it is decoded, walked as text and re-encoded.

Object keys are never changed, but a string value under a password- or key-like key name is checked with that
name as its context (``{"password": "hunter2"}`` has no other clue). The walk is iterative and bounded in depth.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from portcullis.masking.engine import MaskingError
from portcullis.masking.rules import KEY_CLASS, key_class

_UNKNOWN = "?"  # not a class name: "this key has not been classified yet"
MIN_NUMBER = 1_000_000  # integers with 7+ digits are walked as text (cards, phones, SSNs sent as JSON numbers)

# opaque protocol values that must reach the client unchanged (ids and tokens the protocol hands back later); every
# other string — in _meta, schemas, structuredContent, error data — is walked
SKIP_KEYS = frozenset({"jsonrpc", "progressToken", "cursor", "nextCursor", "requestState", "taskId", "protocolVersion"})
TEXT_MIME_PREFIXES = ("text/",)
TEXT_MIME_EXACT = frozenset(
    {
        "application/json",
        "application/xml",
        "application/yaml",
        "application/x-yaml",
        "application/toml",
        "application/javascript",
        "application/x-sh",
        "application/x-shellscript",
        "application/sql",
        "application/x-ndjson",
        "application/ld+json",
        "application/x-www-form-urlencoded",
        "application/x-pem-file",
        "application/csv",
    }
)


def text_like(mime: object) -> bool:
    if not isinstance(mime, str):
        return False
    m = mime.split(";", 1)[0].strip().lower()
    return m.startswith(TEXT_MIME_PREFIXES) or m in TEXT_MIME_EXACT or m.endswith(("+json", "+xml", "+yaml"))


class Strings:
    """The maskable strings of one message, as parallel lists (cheaper than an object per string).

    For string ``i``: ``texts[i]`` is its text, ``parents[i][keys[i]]`` is where it lives, ``paths[i]`` is the path
    of its container (the report adds the key). ``ctx`` lists (index, class) of the strings under password- or
    key-like keys; ``blobs`` maps ``i`` to the encoding of a base64 text blob to re-encode on the way back.
    """

    __slots__ = ("blobs", "ctx", "keys", "numbers", "parents", "paths", "texts")
    # ctx: (index, class) of the strings under a password- or key-like object key, found during the walk

    def __init__(self) -> None:
        self.parents: list[Any] = []
        self.keys: list[Any] = []
        self.texts: list[str] = []
        self.paths: list[tuple[str | int, ...]] = []
        self.ctx: list[tuple[int, str]] = []
        self.blobs: dict[int, str] = {}
        self.numbers: set[int] = set()  # integers walked as their digits (a card or phone number sent as a number)

    def add(self, parent: Any, key: Any, text: str, path: tuple[str | int, ...], ctx: str | None) -> None:
        if ctx is not None:
            cls = KEY_CLASS.get(ctx, _UNKNOWN)
            if cls is _UNKNOWN:
                cls = key_class(ctx)
            if cls is not None:
                self.ctx.append((len(self.texts), cls))
        self.parents.append(parent)
        self.keys.append(key)
        self.texts.append(text)
        self.paths.append(path)

    def __len__(self) -> int:
        return len(self.texts)

    def path(self, i: int) -> tuple[str | int, ...]:
        return (*self.paths[i], self.keys[i])

    def put(self, i: int, text: str) -> None:
        """Write string ``i`` back. A masked number becomes the masking label (a string): leaking it is worse."""
        enc = self.blobs.get(i)
        self.parents[i][self.keys[i]] = base64.b64encode(text.encode(enc)).decode("ascii") if enc else text


def collect(root: Any, base: tuple[str | int, ...], max_depth: int, out: Strings | None = None) -> Strings:
    """Every maskable string under ``root`` (a dict or list)."""
    out = Strings() if out is None else out
    if not isinstance(root, dict | list):
        return out
    add = out.add
    parents, keys, texts, paths = out.parents, out.keys, out.texts, out.paths
    kc = KEY_CLASS.get
    skip = SKIP_KEYS
    stack: list[tuple[Any, tuple[str | int, ...], int]] = [(root, base, 0)]
    while stack:
        node, path, depth = stack.pop()
        if depth > max_depth:
            raise MaskingError(f"the message nests deeper than {max_depth} levels")
        if type(node) is dict:
            special = "blob" in node or "data" in node
            for k, v in node.items():
                t = type(v)
                if t is str:
                    if not v or k in skip:
                        continue
                    if special and (k == "blob" or k == "data"):
                        _special(out, node, k, v, path)
                        continue
                    cls = kc(k, _UNKNOWN)
                    if cls is not None:  # a password- or key-like key (or one not seen yet): the slow way
                        add(node, k, v, path, k)
                        continue
                    parents.append(node)
                    keys.append(k)
                    texts.append(v)
                    paths.append(path)
                elif (t is dict or t is list) and k not in skip:
                    stack.append((v, (*path, k), depth + 1))
                elif t is int and (v >= MIN_NUMBER or v <= -MIN_NUMBER):
                    out.numbers.add(len(texts))
                    add(node, k, str(v), path, None)
        else:
            for i, v in enumerate(node):
                t = type(v)
                if t is str:
                    if v:
                        add(node, i, v, path, None)
                elif t is dict or t is list:
                    stack.append((v, (*path, i), depth + 1))
                elif t is int and (v >= MIN_NUMBER or v <= -MIN_NUMBER):
                    out.numbers.add(len(texts))
                    add(node, i, str(v), path, None)
    return out


def _special(out: Strings, node: dict[str, Any], key: str, value: str, path: tuple[str | int, ...]) -> None:
    """``data`` of image/audio content is binary; ``blob`` is binary when its MIME type says so, decoded text when
    its MIME type is text-like (in its ``charset``), and an ordinary string where there is no MIME type at all."""
    if key == "data":
        if node.get("type") not in ("image", "audio"):
            out.add(node, key, value, path, key)
        return
    mime = node.get("mimeType")
    if mime is None:
        out.add(node, key, value, path, key)
        return
    if not text_like(mime):
        return
    try:
        data = base64.b64decode(value, validate=False)
    except (binascii.Error, ValueError):
        raise MaskingError("a text resource blob is not valid base64") from None
    if not data:
        return
    enc = _charset(mime)
    try:
        text = data.decode(enc)
    except (UnicodeDecodeError, LookupError):
        raise MaskingError(f"a text resource blob is not valid {enc}") from None
    out.blobs[len(out)] = enc
    out.add(node, key, text, path, None)


def _charset(mime: str) -> str:
    for part in mime.split(";")[1:]:
        name, _, val = part.strip().partition("=")
        if name.strip().lower() == "charset" and val.strip():
            return val.strip().strip('"').lower()
    return "utf-8"


def path_text(path: tuple[str | int, ...]) -> str:
    out: list[str] = []
    for p in path:
        out.append(f"[{p}]" if isinstance(p, int) else (f".{p}" if out else p))
    return "".join(out)
