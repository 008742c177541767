"""The built-in detection rules (RE2 syntax) and how a match becomes a finding.

Every rule is one RE2 pattern. All patterns of a detector also go into one RE2 ``Set``, so clean text costs a single
linear scan; only rules the set reports run their own ``finditer``. A rule names the group that holds the value to
mask (``group``, 0 = the whole match) and a validator that accepts, rejects or trims it. Negated character classes
exclude NUL: the engine joins many strings with NUL, and no rule may match across that seam.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from portcullis.masking import validators as v

Spans = list[tuple[int, int]]  # (start, end) of the whole match and of each group; (-1, -1) for a group not taken
Extract = Callable[[bytes, Spans], list[tuple[int, int, str]]]


@dataclass(frozen=True, slots=True)
class Rule:
    cls: str
    pattern: str
    group: int = 0
    validator: v.Validator | None = None
    extract: Extract | None = None  # replaces group+validator for rules that decide the class themselves
    multiline: bool = False  # may match across a line end (every other rule must not)
    # a rejected candidate is tried again from after each separator (a number written right after other digits:
    # "qty 2 4111 1111 1111 1111" is a match starting at the 2)
    regroup: bytes = b""

    def findings(self, data: bytes, spans: Spans) -> list[tuple[int, int, str]]:
        if self.extract is not None:
            return self.extract(data, spans)
        start, end = spans[self.group]
        if start < 0:
            return []
        if self.validator is not None:
            keep = self.validator(data[start:end])
            if keep <= 0:
                return self._regrouped(data, start, end) if self.regroup else []
            end = start + keep
        return [(start, end, self.cls)]

    def _regrouped(self, data: bytes, start: int, end: int) -> list[tuple[int, int, str]]:
        assert self.validator is not None
        for i in range(start, end - 1):
            if data[i] in self.regroup and data[i + 1] not in self.regroup:
                keep = self.validator(data[i + 1 : end])
                if keep > 0:
                    return [(i + 1, i + 1 + keep, self.cls)]
        return []


# --- assignments: password = …, "client_secret": "…", SESSION_KEY=…, <password>…</password> ---------------

_PASSWORD_WORDS = (
    r"pass|password|passwd|passphrase|pwd|secret|token|apikey|api[_\- ]key|secret[ ]key|credential|credentials|"
    r"private[_\-.]?key[_\-.]?id"
)
_KEY_WORDS = r"key|salt|hmac|signature|seed|pepper|cred|creds"
# quotes may come JSON-escaped (a config file inside a JSON string): \"password\": \"…\"
_SEP = r"\\?[\"']?[ \t]*(?::=|=>|[:=])[ \t]*"
_VALUE = (
    r"(?:\\?\"((?:[^\"\\\x00\n]|\\[^\"\x00\n]){MIN})\\?\"|\\?'((?:[^'\\\x00\n]|\\[^'\x00\n]){MIN})\\?'"
    r"|([^\s\"',;\x00<>\]\}\)\\]{MIN}))"
)
_ASSIGNMENT = (
    r"(?i)(?:^|[^A-Za-z0-9_.\-])([A-Za-z0-9_.\-]*(?:" + _PASSWORD_WORDS + r"))" + _SEP + _VALUE.replace("{MIN}", "+")
)
# key-like names need a long value (the entropy check wants 16+ characters): short ones never reach Python
# and a value in a key alphabet (base64, base64url, hex) that ends where the value ends
_KEY_CHARS = r"[A-Za-z0-9+/=_\-.~]{16,}"
_KEY_VALUE = (
    r"(?:\\?\"(" + _KEY_CHARS + r")\\?\"|\\?'(" + _KEY_CHARS + r")\\?'|(" + _KEY_CHARS + r")(?:[\s,;\x00<>\]\}\)]|$))"
)
_KEY_ASSIGNMENT = r"(?i)(?:^|[^A-Za-z0-9_.\-])([A-Za-z0-9_.\-]*(?:" + _KEY_WORDS + r"))" + _SEP + _KEY_VALUE
# the key's last word decides: password words -> password_assignment, key words -> high_entropy_secret
_KEY_LAST_WORD = re.compile(
    r"(?:^|[_.\-]|(?<=[a-z0-9])(?=[A-Z]))(?P<w>" + _PASSWORD_WORDS + "|" + _KEY_WORDS + r")$", re.IGNORECASE
)
_KEY_NOT_SECRET = re.compile(
    r"(?:^|[_.\-]|(?<=[a-z])(?=[A-Z]))(?:public|primary|foreign|sort|partition|cache|idempotency|object|routing|row|"
    r"lookup|unique|composite|group|index|i18n|translation|message|shortcut|hot|map|dedup|dedupe|s3|kms|ssh|pub|"
    r"gpg|pgp|next|prev|page|continuation|resume|trace|span|request|correlation|cursor|sequence|seq|column|table|"
    r"field|content|file|path|bucket|ref|name|type|id|lock|tls|cert|product|publishable|refresh|max|min|"
    r"num|count|limit|expir\w*)[_.\-]?(?:" + _KEY_WORDS + r")$",
    re.IGNORECASE,
)
KEY_CLASS: dict[str, str | None] = {}  # key name -> class (None: not a secret's key); filled by key_class


def key_class(key: str) -> str | None:
    """Which class a value under this key name belongs to, if any (cached: key names repeat)."""
    got = KEY_CLASS.get(key, "")
    if got != "":
        return got
    cls: str | None = None
    m = _KEY_LAST_WORD.search(key.strip("-"))
    if m is not None:
        word = m.group("w").lower()
        if re.fullmatch(_PASSWORD_WORDS, word):
            cls = "password_assignment"
        elif not _KEY_NOT_SECRET.search(key):
            cls = "high_entropy_secret"
    if len(KEY_CLASS) < 4096:
        KEY_CLASS[key] = cls
    return cls


def value_ok(cls: str, value: bytes, quoted: bool) -> int:
    if cls == "password_assignment":
        return v.assigned_secret(value, quoted)
    return v.high_entropy(value) if v.assigned_secret(value, quoted) else 0


def _assignment(data: bytes, spans: Spans) -> list[tuple[int, int, str]]:
    ks, ke = spans[1]
    cls = key_class(data[ks:ke].decode("utf-8", "replace"))  # (?i) folds the long s and the Kelvin sign: not only ASCII
    if cls is None:
        return []
    for g, quoted in ((2, True), (3, True), (4, False)):
        start, end = spans[g]
        if start >= 0:
            keep = value_ok(cls, data[start:end], quoted)
            return [(start, start + keep, cls)] if keep else []
    return []


def _xml_assignment(data: bytes, spans: Spans) -> list[tuple[int, int, str]]:
    ks, ke = spans[1]
    cls = key_class(data[ks:ke].decode("utf-8", "replace"))
    if cls is None:
        return []
    start, end = spans[2]
    keep = value_ok(cls, data[start:end], True)
    return [(start, start + keep, cls)] if keep else []


_NB = r"(?:^|[^A-Za-z0-9_\-])"  # "no word before", as a consumed character (RE2 has no look-behind)
_NA = r"(?:[^A-Za-z0-9_\-]|$)"  # "no word after"
_B64 = r"[A-Za-z0-9+/]"

BUILTIN: tuple[Rule, ...] = (
    # --- cloud ------------------------------------------------------------------------------------------------
    Rule(
        "aws_access_key_id",
        r"\b((?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA|APKA)[A-Z2-7]{16})\b",
        1,
    ),
    Rule(
        "aws_secret_access_key",
        r"(?i)(?:aws)?[_\-. ]?secret[_\-. ]?(?:access)?[_\-. ]?key(?:[_\-.]?id)?[\"']?[ \t]*(?::=|=>|[:=])[ \t]*"
        r"[\"']?(" + _B64 + r"{40})(?:[^A-Za-z0-9+/=]|$)",
        1,
    ),
    Rule(  # an access key id followed by its secret (credentials.csv, aws configure output, tables)
        "aws_secret_access_key",
        r"(?:AKIA|ASIA)[A-Z2-7]{16}[\"']?[ \t]*[,;|:\t][ \t]*[\"']?(" + _B64 + r"{40})(?:[^A-Za-z0-9+/=]|$)",
        1,
    ),
    Rule("gcp_api_key", _NB + r"(AIza[0-9A-Za-z_\-]{35})" + _NA, 1),
    Rule(
        "azure_connection_string",
        r"(?i)(?:AccountKey|SharedAccessKey|SharedAccessSignature)=([^;\s\"'\x00]{16,})",
        1,
    ),
    # --- source hosting, chat, payments, LLMs ---------------------------------------------------------------
    Rule("github_token", _NB + r"(gh[pousr]_[A-Za-z0-9]{36,})" + _NA, 1),
    Rule("github_token", _NB + r"(github_pat_[A-Za-z0-9]{22}_[A-Za-z0-9]{59})" + _NA, 1),
    Rule("gitlab_token", _NB + r"(gl(?:pat|dt|rt|ptt|cbt|imt|agent|soat|ft)-[0-9A-Za-z_\-]{20,})" + _NA, 1),
    Rule("slack_token", _NB + r"(xox[abposr]-(?:\d+-)?[0-9A-Za-z\-]{10,})", 1),
    Rule("slack_token", _NB + r"(xapp-\d-[A-Z0-9]{8,}-\d{8,}-[a-z0-9]{32,})", 1),
    Rule(
        "slack_webhook",
        r"(https://hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9_/\-]{8,})",
        1,
    ),
    Rule("stripe_key", _NB + r"([sr]k_(?:live|test)_[0-9A-Za-z]{16,})" + _NA, 1),
    Rule("llm_api_key", _NB + r"(sk-ant-(?:api|admin|sid)\d\d-[A-Za-z0-9_\-]{32,})", 1),
    Rule("llm_api_key", _NB + r"(sk-(?:proj|svcacct|admin|None)-[A-Za-z0-9_\-]{32,})", 1),
    Rule("llm_api_key", _NB + r"(sk-[A-Za-z0-9]{20}T3BlbkFJ[A-Za-z0-9]{20,})", 1),
    Rule("llm_api_key", _NB + r"(sk-[A-Za-z0-9]{32,})" + _NA, 1, v.high_entropy),
    Rule("llm_api_key", _NB + r"(gsk_[A-Za-z0-9]{48,}|hf_[A-Za-z]{30,}|xai-[A-Za-z0-9]{60,})" + _NA, 1),
    # --- tokens, keys, credentials in URIs and headers -------------------------------------------------------
    Rule("jwt", _NB + r"(eyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]*)", 1, v.jwt),
    Rule(
        "private_key",
        r"(-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----[^\x00]*?-----END (?:[A-Z0-9]+ )*PRIVATE KEY"
        r"(?: BLOCK)?-----)",
        1,
        multiline=True,
    ),
    Rule(  # a key block that was cut off (truncated output): mask through the end of its base64 body
        "private_key",
        r"(-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----(?:[A-Za-z0-9+/=:, \t\r\n\-]|\\[nr])*)",
        1,
        multiline=True,
    ),
    Rule(
        "uri_credentials",
        r"(?i)\b(?:[a-z][a-z0-9+.\-]+)://[^\s:/@'\"\x00<>]*:([^\s@/'\"\x00<>]+)@[A-Za-z0-9\[]",
        1,
        v.uri_password,
    ),
    Rule(
        "http_auth",
        r"(?i)(?:^|[^A-Za-z0-9])basic[ \t]+([A-Za-z0-9+/]{8,}={0,2})(?:[^A-Za-z0-9+/=]|$)",
        1,
        v.basic_credentials,
    ),
    Rule(
        "http_auth",
        r"(?i)(?:^|[^A-Za-z0-9])bearer[ \t]+([A-Za-z0-9._~+/\-]{16,}=*)",
        1,
        v.opaque_token,
    ),
    Rule(  # "Authorization: token …" (GitHub's scheme), "Authorization: Bearer …", any scheme in the header
        "http_auth",
        r"(?i)authorization[\"']?[ \t]*[:=][ \t]*[\"']?[A-Za-z\-]+[ \t]+([A-Za-z0-9._~+/\-]{16,}=*)",
        1,
        v.opaque_token,
    ),
    Rule("password_assignment", _ASSIGNMENT, extract=_assignment),
    Rule("high_entropy_secret", _KEY_ASSIGNMENT, extract=_assignment),
    Rule(
        "password_assignment",
        r"(?i)<([A-Za-z0-9_.\-:]*(?:" + _PASSWORD_WORDS + "|" + _KEY_WORDS + r"))>([^<\x00]+)</",
        extract=_xml_assignment,
        multiline=True,
    ),
    Rule(
        "password_assignment",
        r"(?i)(?:^|\s)--?(?:password|passwd|pass|token|secret|api-key|client-secret)[ \t]+[\"']?([^\s\"'\x00]{4,})",
        1,
        lambda b: v.assigned_secret(b, True),
    ),
    # --- PII ----------------------------------------------------------------------------------------------
    Rule(
        "email",
        r"(?:^|[^A-Za-z0-9._%+\-/\x{80}-\x{10FFFF}])((?:[A-Za-z0-9._%+\-]|[^\x00-\x7f])+@[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?"
        r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,24})(?:[^A-Za-z0-9\-]|$)",
        1,
        v.email,
    ),
    Rule(
        "credit_card",
        r"(?:^|[^0-9A-Za-z\-.])([2-6](?:[0-9]|[ \-][0-9]){12,22})(?:[^0-9A-Za-z\-.]|$|[.\-](?:[^0-9]|$))",
        1,
        v.credit_card,
        regroup=b" -",
    ),
    Rule("iban", r"(?:^|[^A-Za-z0-9])([A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]){11,30})", 1, v.iban),
    Rule("us_ssn", r"(?:^|[^0-9\-])([0-9]{3}-[0-9]{2}-[0-9]{4})(?:[^0-9\-]|$)", 1, v.us_ssn),
    Rule(
        "us_ssn",
        r"(?i)(?:ssn|social[ _\-]?security(?:[ _\-]?(?:number|no|#))?)[\"']?[ \t]*[:=#]?[ \t]*[\"']?"
        r"([0-9]{3}[ ]?[0-9]{2}[ ]?[0-9]{4})(?:[^0-9]|$)",
        1,
        v.us_ssn,
    ),
    Rule(
        "phone_number",
        r"(?:^|[^0-9A-Za-z+\-_.:/])(\+[1-9][0-9]{0,2}(?:[ .\-]?\(?[0-9]{1,5}\)?){1,6})(?:[^0-9A-Za-z\-_/:]|$)",
        1,
        v.NAMED["phone"],
    ),
    Rule(
        "phone_number",
        r"(?:^|[^0-9A-Za-z+\-_.:/])((?:\([2-9][0-9]{2}\)[ .\-]?|[2-9][0-9]{2}[ .\-])[2-9][0-9]{2}[ .\-][0-9]{4})"
        r"(?:[^0-9A-Za-z\-_/:]|$)",
        1,
        v.NAMED["phone"],
    ),
    Rule(
        "phone_number",
        r"(?i)(?:phone|tel|mobile|cell|fax|sms|whatsapp)[\w\"']{0,12}[ \t]*[:=]?[ \t]*[\"']?"
        r"(1?[2-9][0-9]{9})(?:[^0-9]|$)",
        1,
        v.NAMED["phone"],
    ),
    Rule(
        "ip_address",
        r"(?:^|[^0-9A-Za-z.\-])((?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(?:\.(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|"
        r"[1-9]?[0-9])){3})(?:[^0-9A-Za-z.\-]|$|[.\-](?:[^0-9A-Za-z]|$))",
        1,
        v.ip_address,
    ),
    Rule(
        "ip_address",
        r"(?i)(?:^|[^0-9a-z:.])((?:[0-9a-f]{0,4}:){2,7}[0-9a-f]{1,4})(?:[^0-9a-z:]|$)",
        1,
        v.ip_address,
    ),
)
