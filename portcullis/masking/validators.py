"""Validators: checksums, validity rules, entropy and placeholder checks that cut false positives.

A validator takes the candidate value (UTF-8 bytes, as the regex matched it) and returns how many of its bytes to
mask: ``0`` rejects the candidate, ``len(value)`` accepts all of it, anything between keeps a valid prefix (an
IBAN followed by a word in capitals). Validators are pure and cheap; none does I/O.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import math
import re
from collections.abc import Callable

import phonenumbers

Validator = Callable[[bytes], int]

_DIGITS = frozenset(b"0123456789")


def digits_of(value: bytes) -> bytes:
    return bytes(c for c in value if c in _DIGITS)


def luhn_ok(digits: bytes) -> bool:
    total = 0
    for i, c in enumerate(reversed(digits)):
        d = c - 48
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _card_brand_ok(d: bytes) -> bool:
    n = len(d)
    p2 = int(d[:2])
    p4 = int(d[:4])
    p3 = int(d[:3])
    if d[:1] == b"4":
        return n in (13, 16, 19)
    if 51 <= p2 <= 55 or 2221 <= p4 <= 2720:
        return n == 16
    if p2 in (34, 37):
        return n == 15
    if p4 == 6011 or p2 == 65 or 644 <= p3 <= 649 or 622126 <= int(d[:6]) <= 622925:
        return 16 <= n <= 19
    if 3528 <= p4 <= 3589:
        return 16 <= n <= 19
    if p2 in (36, 38, 39) or 300 <= p3 <= 305:
        return 14 <= n <= 19
    if p2 == 62:  # UnionPay
        return 16 <= n <= 19
    return False


_CARD_GROUPS = {(4, 4, 4, 4), (4, 6, 5), (4, 6, 4), (4, 4, 4, 4, 3), (4, 4, 4, 1), (4, 4, 5), (4, 4, 4, 2)}


def credit_card(value: bytes) -> int:
    """A card number as written, or the longest leading part of it that is one (a candidate may run into the
    next number: "4111 1111 1111 1111 12/27")."""
    keep = _card(value)
    if keep:
        return keep
    cut = len(value)
    while True:
        cut = max(value.rfind(b" ", 0, cut), value.rfind(b"-", 0, cut))
        if cut <= 0:
            return 0
        keep = _card(value[:cut])
        if keep:
            return keep


def _card(value: bytes) -> int:
    d = digits_of(value)
    if not 13 <= len(d) <= 19 or not luhn_ok(d) or not _card_brand_ok(d):
        return 0
    if len(d) != len(value):  # written with separators: one kind of separator, in the usual groups
        seps = {c for c in value if c not in _DIGITS}
        if len(seps) != 1:
            return 0
        sep = bytes(seps)
        groups = tuple(len(g) for g in value.split(sep))
        if groups not in _CARD_GROUPS:
            return 0
    if len(set(d)) == 1:
        return 0  # 0000 0000 0000 0000
    return len(value)


IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29, "BY": 28,
    "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18,
    "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22,
    "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20,
    "LU": 20, "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30, "NL": 18, "NO": 15,
    "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24, "SC": 31, "SE": 24, "SI": 19,
    "SK": 24, "SM": 27, "ST": 25, "SV": 28, "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}  # fmt: skip


def mod97_ok(iban: str) -> bool:
    s = iban[4:] + iban[:4]
    total = 0
    for ch in s:
        total = (total * (10 if ch.isdigit() else 100) + int(ch, 36)) % 97
    return total == 1


def iban(value: bytes) -> int:
    text = value.decode("ascii", "replace")
    length = IBAN_LENGTHS.get(text[:2])
    if length is None:
        return 0
    compact: list[str] = []
    end = 0
    for i, ch in enumerate(text):
        if ch == " ":
            continue
        compact.append(ch)
        end = i + 1
        if len(compact) == length:
            break
    candidate = "".join(compact)
    if len(candidate) != length or not candidate.isalnum() or not mod97_ok(candidate.upper()):
        return 0
    return end


def us_ssn(value: bytes) -> int:
    d = digits_of(value)
    if len(d) != 9:
        return 0
    area, group, serial = d[:3], d[3:5], d[5:]
    if area in (b"000", b"666") or area[:1] == b"9" or group == b"00" or serial == b"0000":
        return 0
    if d in (b"123456789", b"078051120", b"219099999"):  # well-known invalid / advertising numbers
        return 0
    return len(value)


class PhoneValidator:
    """Valid numbers per libphonenumber; national forms are read in the configured default region."""

    def __init__(self, region: str = "US") -> None:
        self.region = region
        self._seen: dict[bytes, int] = {}  # libphonenumber costs ~25 µs a number: numbers repeat in output

    def __call__(self, value: bytes) -> int:
        got = self._seen.get(value)
        if got is None:
            got = self._check(value)
            if len(self._seen) >= 4096:
                self._seen.clear()
            self._seen[value] = got
        return got

    def _check(self, value: bytes) -> int:
        text = value.decode("ascii", "replace").strip()
        digits = digits_of(value)
        if not 7 <= len(digits) <= 15 or len(set(digits)) <= 2:
            return 0
        try:
            number = phonenumbers.parse(text, None if text.startswith("+") else self.region)
        except phonenumbers.NumberParseException:
            return 0
        return len(value) if phonenumbers.is_valid_number(number) else 0


def shannon(value: bytes) -> float:
    n = len(value)
    if n == 0:
        return 0.0
    counts: dict[int, int] = {}
    for c in value:
        counts[c] = counts.get(c, 0) + 1
    return -sum(k / n * math.log2(k / n) for k in counts.values())


_UUID = re.compile(rb"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_HEX = re.compile(rb"^[0-9a-fA-F]+$")


def high_entropy(value: bytes) -> int:
    """A random-looking credential: long enough, mixed, and with entropy a word or an id does not have.

    Only ever asked about values under a key-like name (``*_key``, ``*_salt``, ``hmac``…), so a 32- or 40-digit hex
    value there is taken for the key it most likely is; a dashed UUID is an id.
    """
    n = len(value)
    if n < 16 or _UUID.match(value):
        return 0
    if _HEX.match(value):
        return n if shannon(value) >= 3.0 else 0
    upper = any(65 <= c <= 90 for c in value)
    lower = any(97 <= c <= 122 for c in value)
    digit = any(48 <= c <= 57 for c in value)
    if upper + lower + digit < 2:
        return 0
    return n if shannon(value) >= (3.5 if upper + lower + digit == 3 else 3.8) else 0


_PLACEHOLDER = re.compile(
    r"""^(?:
        \$\{\{.*\}\} | \$\{[^}]*\}? | \$[A-Za-z_][A-Za-z0-9_]* | \$\(.*\) | \{\{.*\}\} | \{%.*%\} | <[^>]*>
      | %\([A-Za-z_]*\)s | %s
      | __[A-Za-z0-9_]+__ | @[A-Za-z0-9_]+@ | %[A-Za-z0-9_]+% | \#\{[^}]*\}
      | \[[A-Za-z _\-:]*\]? | \(?[A-Za-z _\-]{0,20}redacted[A-Za-z _\-]{0,20}\)?
      | \[?REDACTED:[^\]]*\]? | \[?[a-z_]+\#[0-9a-f]{12}\]?
      | [*•xX#.…_\-]+ | ~
      | null | none | nil | undefined | true | false | yes | no | on | off | empty | required | optional | n/?a
      | string | str | bool | int | bytes | secret[_\-]?str | secretstr | any | object | default
      | changeme | change[_\-]?me | changeit | password | passwd | secret | token | example | sample | test | dummy
      | placeholder | todo | tbd | fixme | xxx+ | your[A-Za-z_\-]* | my[_\-]?(?:password|secret|token)
      | env | from[_\-]env | environment | vault | ref | secretref | secretkeyref | valuefrom | os\.environ.*
      | process\.env.* | getenv.* | os\.getenv.*
    )$""",
    re.IGNORECASE | re.VERBOSE,
)
# a reference in code, not a value: settings.DB_PASSWORD, os.environ["X"], self.token, getpass() — but a dotted
# passphrase (correct.horse.battery.staple) is a value
_REFERENCE = re.compile(
    r"^(?:self|this|cls|settings|config|cfg|conf|os|process|env|environ|secrets|vars|params|props|options|opts|app|"
    r"ctx|context|request|req|args|kwargs|values|Values|data|creds|credentials|keyring|vault|System|Environment)"
    r"(?:\.[A-Za-z_][A-Za-z0-9_]*|\[[^\]]*\])+$|^[A-Za-z_][A-Za-z0-9_.]*\(.*|^[A-Z][A-Z0-9_]*\.[A-Z][A-Z0-9_]*$"
)
_PUBLIC = (b"pk_live_", b"pk_test_")
MAX_PLACEHOLDER = 200  # Stripe publishable keys are meant to be public


def placeholder(value: str) -> bool:
    # placeholders are short; the length check also keeps the (backtracking) pattern off long values
    return len(value) <= MAX_PLACEHOLDER and bool(_PLACEHOLDER.match(value))


def assigned_secret(value: bytes, quoted: bool) -> int:
    """The value of a password-like assignment, unless it is a placeholder, a reference or obviously not one."""
    text = value.decode("utf-8", "replace").strip()
    if len(text) < 4 or placeholder(text) or value.startswith(_PUBLIC):
        return 0
    if not quoted and _REFERENCE.match(text):
        return 0  # settings.DB_PASSWORD, os.getenv("X"), self.token: a reference in code, not a value
    if text[0] in "/~" or text.startswith("./"):
        return 0  # a path (pwd: /home/x, token_file: /var/run/...)
    if text.isdigit() and len(text) < 6:
        return 0
    return len(value)


def basic_credentials(value: bytes) -> int:
    """``Authorization: Basic`` carries base64 of user:password."""
    raw = value.rstrip(b"=")
    try:
        decoded = base64.b64decode(raw + b"=" * (-len(raw) % 4), validate=True)
    except (binascii.Error, ValueError):
        return 0
    return len(value) if b":" in decoded else 0


def opaque_token(value: bytes) -> int:
    """A bearer credential: long enough and not a word."""
    if len(value) < 16 or placeholder(value.decode("ascii", "replace")):
        return 0
    return len(value) if shannon(value) >= 3.0 else 0


def uri_password(value: bytes) -> int:
    text = value.decode("utf-8", "replace")
    if placeholder(text) or text.startswith(("${", "$", "{{", "%")):
        return 0
    return len(value)


def ip_address(value: bytes) -> int:
    text = value.decode("ascii", "replace")
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return 0
    if addr.version == 6 and text.count(":") < 2:
        return 0
    return len(value)


_FILE_TLDS = frozenset(
    b"png jpg jpeg gif svg webp ico bmp js mjs ts tsx jsx css scss py rb go rs java kt json yaml yml toml txt md "
    b"lock html htm xml csv log sh zip gz tar".split()
)


def email(value: bytes) -> int:
    at = value.rfind(b"@")
    local, domain = value[:at], value[at + 1 :]
    if not local or local[0] == 46 or local[-1] == 46 or b".." in local:
        return 0
    labels = domain.split(b".")
    if domain == b"masked.invalid":
        return 0  # one of our own pseudonyms: masking twice must change nothing
    if len(labels) == 2 and labels[1].lower() in _FILE_TLDS:
        return 0  # icon@2x.png, module@1x.js
    return len(value)


def jwt(value: bytes) -> int:
    head = value.split(b".", 1)[0]
    try:
        decoded = base64.urlsafe_b64decode(head + b"=" * (-len(head) % 4))
    except (binascii.Error, ValueError):
        return 0
    return len(value) if decoded.startswith(b"{") and b'"alg"' in decoded.replace(b" ", b"") else 0


def always(value: bytes) -> int:
    return len(value)


NAMED: dict[str, Validator] = {
    "luhn": lambda v: len(v) if len(digits_of(v)) >= 8 and luhn_ok(digits_of(v)) else 0,
    "mod97": iban,
    "credit_card": credit_card,
    "us_ssn": us_ssn,
    "phone": PhoneValidator(),
    "entropy": high_entropy,
    "email": email,
    "jwt": jwt,
    "not_placeholder": lambda v: 0 if placeholder(v.decode("utf-8", "replace")) else len(v),
    "none": always,
}
