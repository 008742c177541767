"""A labelled corpus of realistic tool outputs, generated deterministically, for scoring the masker (issue 4).

Each record is text a tool could return (an application log, an .env file, YAML, a psql/mysql result table, a stack
trace, a JSON API response, an e-mail, a CSV export, source code, shell history) with the exact character spans of
what must be masked (:class:`Span`, by class) and of look-alikes that must survive untouched (:class:`Negative`, by
kind). About half the records are clean, a quarter carry secrets or PII, a quarter only hard negatives.
:func:`generate` checks every label (:func:`check_record`) before it returns, so a label is never wrong silently.

    python -m tests.support.mask_corpus --out corpus.jsonl [--n 2000] [--seed 4]
"""

from __future__ import annotations

import argparse
import base64
import email.utils
import ipaddress
import itertools
import json
import math
import random
import re
import string
import sys
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial

import phonenumbers


def words(s: str) -> tuple[str, ...]:
    return tuple(s.split())


# --------------------------------------------------------------------------------------------------------------------
# Public API


@dataclass(frozen=True, slots=True)
class Span:
    """A positive: ``text[start:end]`` must be masked; ``cls`` is one of :data:`CLASSES`."""

    start: int
    end: int
    cls: str


@dataclass(frozen=True, slots=True)
class Negative:
    """A hard negative: ``text[start:end]`` must survive untouched; ``kind`` is one of :data:`NEGATIVE_KINDS`."""

    start: int
    end: int
    kind: str


@dataclass(frozen=True, slots=True)
class CorpusRecord:
    text: str
    fmt: str
    spans: tuple[Span, ...]
    negatives: tuple[Negative, ...]


FORMATTED_SECRETS = words(
    "aws_access_key_id aws_secret_access_key gcp_api_key azure_connection_string github_token gitlab_token "
    "slack_token slack_webhook stripe_key llm_api_key jwt private_key uri_credentials http_auth email"
)
CHECKSUMMED_PII = ("credit_card", "iban", "us_ssn")
CONTEXT_DEPENDENT = ("password_assignment", "high_entropy_secret", "phone_number")
OPTIONAL_CLASSES = ("ip_address",)
CLASSES = FORMATTED_SECRETS + CHECKSUMMED_PII + CONTEXT_DEPENDENT + OPTIONAL_CLASSES

NEGATIVE_KINDS = words(
    "uuid git_sha git_sha_short npm_integrity sha256_digest pip_hash go_sum_hash luhn_invalid_number timestamp "
    "version base64_image placeholder env_reference iban_bad_checksum ssn_invalid date password_word_key "
    "key_name_non_secret stripe_publishable_key hex_colour k8s_resource_version docker_digest port duration path "
    "url_no_credentials npm_package_spec pem_public"
)

FORMATS = ("log", "env", "yaml", "sql", "stacktrace", "json", "email", "csv", "code", "shell")

# --------------------------------------------------------------------------------------------------------------------
# Labelled segments: a document is a list of plain strings and labelled pieces; offsets are computed at the end, so
# escaping (JSON, YAML block indentation) can be applied piece by piece and the labels follow the escaped text.

R = random.Random


@dataclass(frozen=True, slots=True)
class Lab:
    text: str
    cls: str | None = None
    kind: str | None = None


Seg = str | Lab
Key = tuple[str, ...] | str  # words (cased per format) or a literal key


def P(text: str, cls: str) -> Lab:
    return Lab(text, cls=cls)


def N(text: str, kind: str) -> Lab:
    return Lab(text, kind=kind)


def plain(segs: Sequence[Seg]) -> str:
    return "".join(s if isinstance(s, str) else s.text for s in segs)


def mapseg(segs: Sequence[Seg], f: Callable[[str], str]) -> list[Seg]:
    return [f(s) if isinstance(s, str) else Lab(f(s.text), s.cls, s.kind) for s in segs]


def seglen(segs: Sequence[Seg]) -> int:
    return sum(len(s) if isinstance(s, str) else len(s.text) for s in segs)


def join(units: Sequence[Sequence[Seg]], sep: str = "\n") -> list[Seg]:
    out: list[Seg] = []
    for i, u in enumerate(units):
        if i:
            out.append(sep)
        out.extend(u)
    return out


@dataclass(slots=True)
class V:
    """A leaf value of a JSON/YAML tree; ``raw`` values (numbers, expressions) are never quoted."""

    segs: list[Seg]
    raw: bool = False


@dataclass(slots=True)
class KV:
    """A key/value item; every format knows how to write one (``KEY=v``, ``key: v``, ``"key": "v"``, ...)."""

    key: Key
    val: list[Seg]
    raw: bool = False


@dataclass(slots=True)
class Raw:
    """Format-specific text (a command, a log message, a sentence); ``whole`` lines get no log prefix."""

    segs: list[Seg]
    whole: bool = False


Item = KV | Raw


@dataclass(slots=True)
class Ctx:
    fmt: str
    lang: str = ""  # code: python/js/go/java/properties; stacktrace: python/java; log and shell: a style
    case: str = "snake"  # key case for json/yaml
    tmpl: str = ""  # the template a json/yaml document uses
    extras: dict[str, str] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------------------------------
# Pools

ALNUM = string.ascii_letters + string.digits
UPPER_DIGITS = string.ascii_uppercase + string.digits
B32 = string.ascii_uppercase + "234567"
B64 = ALNUM + "+/"
URLSAFE = ALNUM + "-_"
HEX = "0123456789abcdef"
PW_SPECIALS = "!%^*_-+.?~"

FIRST = words(
    "alice bob carol dave erin frank grace heidi ivan judy mallory olivia peggy rupert sybil trent victor walter "
    "yuki zoe amara bilal chen diego elena farah goran hana ines jonas kenji lena mateo nadia omar priya quinn rosa "
    "sven tariq uma vera wei ximena yara zane"
)
LAST = words(
    "smith johnson garcia miller davis martinez lopez wilson anderson taylor thomas moore jackson martin lee thompson "
    "white harris clark lewis walker hall young king wright scott green baker adams nelson hill campbell mitchell "
    "roberts carter phillips evans turner torres parker collins edwards stewart morris nguyen murphy rivera cook "
    "rogers morgan peterson cooper reed bailey bell gomez kelly howard ward cox diaz wood watson brooks bennett gray "
    "patel schmidt fischer weber novak kowalski dubois moreau rossi bianchi jansen dejong okafor tanaka suzuki"
)
COMPANY_DOMAINS = words(
    "acme.io globex.com initech.net umbrella-corp.com hooli.xyz stark-industries.com wayne-enterprises.org "
    "cyberdyne.ai soylent.co vandelay.com piedpiper.com aperture-labs.org tyrell.co.uk wonka.de oscorp.fr "
    "massive-dynamic.nl gringotts.ch dunder-mifflin.us prestige-worldwide.com.au northwind.dev contoso.eu"
)
FREEMAIL = words("gmail.com outlook.com yahoo.com proton.me icloud.com fastmail.fm web.de gmx.net hotmail.co.uk")
ROLES = words("ops billing security noreply support alerts devops finance hr payroll admin")
WORDS = words(
    "summer winter dragon monkey sunshine football purple coffee rocket tiger falcon ocean maple silver thunder "
    "banana castle galaxy pepper shadow harbor breeze cobalt violet copper willow meadow canyon glacier nebula "
    "orange lemon marble zebra panda koala mango cactus pirate wizard"
)
SERVICES = words("billing orders auth search inventory notifications payments gateway reports ingest catalog users")
HOSTS = words(
    "db.internal postgres-primary.prod.svc.cluster.local mysql-0.mysql cache.internal redis-master rabbitmq.prod "
    "mongo-0.mongo.svc db-replica-2.internal warehouse.internal pg.billing.svc"
)
REGIONS = words("eu-west-1 us-east-1 us-west-2 eu-central-1 ap-southeast-2 westeurope eastus2")
PATH_SEGS = words("api v1 v2 orders customers invoices items users reports search health metrics webhooks sessions")
LEVELS = ("INFO", "INFO", "INFO", "DEBUG", "WARN", "ERROR")

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def rs(r: R, alphabet: str, n: int) -> str:
    return "".join(r.choices(alphabet, k=n))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def loguniform(r: R, lo: float, hi: float) -> int:
    return int(math.exp(r.uniform(math.log(lo), math.log(hi))))


def a_time(r: R) -> datetime:
    return T0 + timedelta(seconds=r.randint(0, 3 * 365 * 86400), microseconds=r.randint(0, 999_999))


def a_name(r: R) -> str:
    return f"{r.choice(FIRST).capitalize()} {r.choice(LAST).capitalize()}"


def a_user(r: R) -> str:
    return r.choice([f"{r.choice(FIRST)}", f"{r.choice(FIRST)[0]}{r.choice(LAST)}", f"svc-{r.choice(SERVICES)}"])


def a_path(r: R) -> str:
    segs = ["api", r.choice(["v1", "v2"]), *r.sample(PATH_SEGS[3:], k=r.randint(1, 2))]
    if r.random() < 0.4:
        segs.insert(3, str(r.randint(1, 99999)))
    return "/" + "/".join(segs)


def a_service(r: R) -> str:
    return f"{r.choice(SERVICES)}-{r.choice(['api', 'worker', 'service', 'web', 'cron'])}"


def entropy(s: str) -> float:
    counts: dict[str, int] = {}
    for ch in s:
        counts[ch] = counts.get(ch, 0) + 1
    return -sum(c / len(s) * math.log2(c / len(s)) for c in counts.values())


# --------------------------------------------------------------------------------------------------------------------
# Checksums and validity rules


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def luhn_digit(body: str) -> str:
    for d in "0123456789":
        if luhn_ok(body + d):
            return d
    raise AssertionError("unreachable")


IBAN_SPECS: dict[str, str] = {  # BBAN layout: n digit, a upper letter, c upper alnum
    "DE": "n" * 18,
    "GB": "aaaa" + "n" * 14,
    "FR": "n" * 10 + "c" * 11 + "nn",
    "NL": "aaaa" + "n" * 10,
    "ES": "n" * 20,
    "IT": "a" + "n" * 10 + "c" * 12,
    "CH": "n" * 5 + "c" * 12,
    "BE": "n" * 12,
    "AT": "n" * 16,
    "PL": "n" * 24,
}


def _iban_num(s: str) -> int:
    return int("".join(str(int(ch, 36)) for ch in s))


def iban_ok(text: str) -> bool:
    s = text.replace(" ", "")
    if len(s) < 5 or s[:2] not in IBAN_SPECS or len(s) != 4 + len(IBAN_SPECS[s[:2]]):
        return False
    return _iban_num(s[4:] + s[:4]) % 97 == 1


def ssn_ok(text: str) -> bool:
    m = re.fullmatch(r"(\d{3})-(\d{2})-(\d{4})", text)
    if not m:
        return False
    area, group, serial = m.groups()
    return area not in ("000", "666") and not area.startswith("9") and group != "00" and serial != "0000"


def phone_ok(text: str) -> bool:
    try:
        return phonenumbers.is_valid_number(phonenumbers.parse(text, "US"))
    except phonenumbers.NumberParseException:
        return False


# --------------------------------------------------------------------------------------------------------------------
# Positive values


def v_aws_key_id(r: R) -> str:
    return r.choice(["AKIA", "AKIA", "ASIA"]) + rs(r, B32, 16)


def v_aws_secret(r: R) -> str:
    while True:
        s = rs(r, ALNUM + "/+", 40)
        if any(c.isupper() for c in s) and any(c.islower() for c in s) and any(c.isdigit() for c in s):
            return s


def v_gcp_key(r: R) -> str:
    return "AIza" + rs(r, URLSAFE, 35)


def v_github(r: R) -> str:
    if r.random() < 0.25:
        return "github_pat_" + rs(r, ALNUM, 22) + "_" + rs(r, ALNUM, 59)
    return r.choice(["ghp_", "ghp_", "gho_", "ghu_", "ghs_", "ghr_"]) + rs(r, ALNUM, 36)


def v_gitlab(r: R) -> str:
    return "glpat-" + rs(r, URLSAFE, 20)


def v_slack_token(r: R) -> str:
    def d() -> str:
        return str(r.randint(10**9, 10**13 - 1))

    t = r.choice("bbbppas")
    if t == "b":
        return f"xoxb-{d()}-{d()}-{rs(r, ALNUM, 24)}"
    if t == "p":
        return f"xoxp-{d()}-{d()}-{d()}-{rs(r, HEX, 32)}"
    if t == "a":
        return f"xoxa-2-{d()}-{d()}-{d()}-{rs(r, HEX, 32)}"
    return f"xoxs-{d()}-{d()}-{d()}-{rs(r, HEX, 64)}"


def v_slack_webhook(r: R) -> str:
    t = rs(r, UPPER_DIGITS, r.randint(8, 10))
    b = rs(r, UPPER_DIGITS, r.randint(8, 10))
    return f"https://hooks.slack.com/services/T{t}/B{b}/{rs(r, ALNUM, 24)}"


def v_stripe(r: R) -> str:
    pre = r.choice(["sk_live_", "sk_live_", "rk_live_", "sk_test_"])
    n = r.choice([24, 24, 99, r.randint(24, 99)])
    return pre + ("51" if n == 99 else "") + rs(r, ALNUM, n - (2 if n == 99 else 0))


def v_llm(r: R) -> str:
    x = r.random()
    if x < 0.15:
        return "sk-" + rs(r, ALNUM, 48)
    if x < 0.3:
        return "sk-" + rs(r, ALNUM, 20) + "T3BlbkFJ" + rs(r, ALNUM, 20)
    if x < 0.65:
        return "sk-proj-" + rs(r, URLSAFE, r.randint(100, 150))
    return "sk-ant-api03-" + rs(r, URLSAFE, 93) + "AA"


def v_jwt(r: R) -> str:
    rs256 = r.random() < 0.4
    header: dict[str, str] = {"alg": "RS256" if rs256 else "HS256", "typ": "JWT"}
    if rs256 and r.random() < 0.7:
        header["kid"] = rs(r, URLSAFE, 22)
    now = int(a_time(r).timestamp())
    payload: dict[str, object] = {
        "sub": r.choice([str(uuid.UUID(int=r.getrandbits(128), version=4)), f"user_{r.randint(1, 10**6)}"]),
        "iat": now,
        "exp": now + r.choice([300, 900, 3600, 86400]),
    }
    if r.random() < 0.6:
        payload["iss"] = f"https://auth.{r.choice(COMPANY_DOMAINS)}/"
    if r.random() < 0.5:
        payload["scope"] = " ".join(r.sample(["read", "write", "admin", "openid", "profile", "offline_access"], k=2))
    if r.random() < 0.3:
        payload["name"] = a_name(r)
    parts = [json.dumps(header, separators=(",", ":")), json.dumps(payload, separators=(",", ":"))]
    sig = b64url(r.randbytes(256 if rs256 else 32))
    return ".".join([*(b64url(p.encode()) for p in parts), sig])


PEM_SHAPES: tuple[tuple[str, str, int], ...] = (
    ("RSA PRIVATE KEY", "MIIEowIBAAKCAQEA", 1588),
    ("RSA PRIVATE KEY", "MIIJKQIBAAKCAgEA", 3168),
    ("EC PRIVATE KEY", "MHcCAQEEI", 164),
    ("OPENSSH PRIVATE KEY", "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAA", 400),
    ("OPENSSH PRIVATE KEY", "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAABlwAAAAdzc2gtcn", 2600),
    ("PRIVATE KEY", "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQ", 1624),
    ("PRIVATE KEY", "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg", 184),
    ("ENCRYPTED PRIVATE KEY", "MIIFHDBOBgkqhkiG9w0BBQ0wQTApBgkqhkiG9w0BBQwwHAQI", 1752),
)


def pem_block(r: R, label: str, prefix: str, size: int, headers: str = "") -> str:
    pad = r.choice([0, 1, 2])
    body = prefix + rs(r, B64, size - len(prefix) - pad) + "=" * pad
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return f"-----BEGIN {label}-----\n{headers}" + "\n".join(lines) + f"\n-----END {label}-----"


def v_private_key(r: R) -> str:
    label, prefix, size = r.choice(PEM_SHAPES)
    size = size + 4 * r.randint(-3, 3)
    headers = ""
    if label == "RSA PRIVATE KEY" and r.random() < 0.2:
        headers = f"Proc-Type: 4,ENCRYPTED\nDEK-Info: AES-256-CBC,{rs(r, '0123456789ABCDEF', 32)}\n\n"
    return pem_block(r, label, prefix, size, headers)


def v_password(r: R, uri: bool = False) -> str:
    while True:
        x = r.random()
        if x < 0.3:
            w = r.choice(WORDS)
            w = w.capitalize() if r.random() < 0.7 else w.translate(str.maketrans("aeios", "43105"))
            s = w + str(r.choice([r.randint(0, 99), r.randint(1970, 2026)])) + r.choice(["", "!", "?", "#", "*"])
            if r.random() < 0.3:
                s += r.choice(WORDS).capitalize()
        elif x < 0.45:
            s = r.choice("-_.").join(r.sample(WORDS, k=r.randint(3, 4)))
        elif x < 0.55:
            s = r.choice(WORDS) + str(r.randint(1, 9)) + r.choice("!%*+") + rs(r, string.ascii_letters, 2)
        elif x < 0.75:
            s = rs(r, ALNUM + PW_SPECIALS, r.randint(12, 32))
        else:
            s = rs(r, ALNUM, r.randint(16, 40))
        s = s.replace("#", "!")
        if uri:
            s = "".join(ch if ch in ALNUM + "-_.~" else "%" + f"{ord(ch):02X}" for ch in s)
        if (
            8 <= len(s) <= 40
            and not s.isdigit()
            and s[0].isalnum()
            and not PLACEHOLDER_RE.fullmatch(s)
            and not any(rx.search(s) for rx in FORMATTED_RES.values())
        ):
            return s


def v_opaque_token(r: R) -> str:
    """A token-ish password value (for ``token``/``api_key``/``client_secret`` keys)."""
    while True:
        x = r.random()
        if x < 0.4:
            s = rs(r, ALNUM, r.randint(20, 40))
        elif x < 0.7:
            s = rs(r, HEX, r.choice([32, 40]))
        else:
            s = rs(r, ALNUM, 2) + rs(r, URLSAFE, r.randint(20, 36)) + rs(r, ALNUM, 2)
        if not any(rx.search(s) for rx in FORMATTED_RES.values()):
            return s


def v_high_entropy(r: R) -> str:
    while True:
        x = r.random()
        if x < 0.35:
            s = rs(r, HEX, r.choice([32, 40, 48, 64]))
        elif x < 0.7:
            s = b64(r.randbytes(r.randint(18, 48)))
        else:
            s = rs(r, ALNUM, r.randint(24, 64))
        if 24 <= len(s) <= 64 and entropy(s) >= 3.2 and s[0].isalnum():
            return s


def v_email(r: R) -> str:
    f, last = r.choice(FIRST), r.choice(LAST)
    local = r.choice(
        [
            f"{f}.{last}",
            f"{f[0]}{last}",
            f"{f}{r.randint(1, 99)}",
            f"{f}_{last}",
            f"{last}.{f}",
            r.choice(ROLES),
            f"{f}+{r.choice(['billing', 'github', 'test', 'news'])}",
            f"{f}.{last}{r.randint(70, 99)}",
        ]
    )
    domain = r.choice(COMPANY_DOMAINS) if r.random() < 0.65 else r.choice(FREEMAIL)
    if r.random() < 0.1:
        domain = f"{r.choice(['mail', 'eu', 'corp', 'dev'])}.{domain}"
    if r.random() < 0.1:
        local = ".".join(p.capitalize() for p in local.split("."))
    return f"{local}@{domain}"


US_AREAS = (201, 202, 206, 212, 213, 303, 305, 312, 404, 415, 503, 512, 602, 617, 646, 650, 702, 713, 718, 773, 917)
# country code : national-number pattern (# = any digit)
INTL_PHONE_PATTERNS = words(
    "44:20######## 44:7######### 44:161####### 49:30###### 49:30######## 49:89####### 49:151######## "
    "33:1######## 33:6######## 31:20####### 31:6######## 34:91####### 34:6######## 39:06######## "
    "39:3######### 41:44####### 41:79####### 81:3######## 81:90######## 61:2######## 61:4######## "
    "91:98######## 55:119######## 1:212#######"
)
INTL_PHONES = tuple((int(x.split(":")[0]), x.split(":")[1]) for x in INTL_PHONE_PATTERNS)


def v_phone(r: R) -> str:
    for _ in range(200):
        if r.random() < 0.55:
            area, exch, line = r.choice(US_AREAS), r.randint(200, 999), r.randint(0, 9999)
            digits = f"{area}{exch}{line:04d}"
            if not phone_ok(digits):
                continue
            return r.choice(
                [
                    f"({area}) {exch}-{line:04d}",
                    f"{area}-{exch}-{line:04d}",
                    f"{area}.{exch}.{line:04d}",
                    f"+1 {area}-{exch}-{line:04d}",
                    f"+1 ({area}) {exch}-{line:04d}",
                    f"+1{digits}",
                ]
            )
        cc, pattern = r.choice(INTL_PHONES)
        nsn = "".join(str(r.randint(0, 9)) if ch == "#" else ch for ch in pattern)
        num = phonenumbers.parse(f"+{cc}{nsn}")
        if not phonenumbers.is_valid_number(num):
            continue
        if r.random() < 0.15:
            return phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.E164)
        return phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
    raise AssertionError("no valid phone number generated")


def _card_digits(r: R) -> str:
    brand = r.choice(["visa", "visa", "mc", "mc2", "amex", "discover"])
    if brand == "visa":
        prefix, length = "4", r.choice([16, 16, 16, 13, 19])
    elif brand == "mc":
        prefix, length = str(r.randint(51, 55)), 16
    elif brand == "mc2":
        prefix, length = str(r.randint(2221, 2720)), 16
    elif brand == "amex":
        prefix, length = r.choice(["34", "37"]), 15
    else:
        prefix, length = r.choice(["6011", str(r.randint(644, 649)), "65"]), 16
    body = prefix + "".join(str(r.randint(0, 9)) for _ in range(length - len(prefix) - 1))
    return body + luhn_digit(body)


def group_digits(digits: str, sep: str) -> str:
    if len(digits) == 15:
        sizes = [4, 6, 5]
    elif len(digits) == 13:
        sizes = [4, 4, 5]
    else:
        sizes = [4] * (len(digits) // 4) + ([len(digits) % 4] if len(digits) % 4 else [])
    out, i = [], 0
    for n in sizes:
        out.append(digits[i : i + n])
        i += n
    return sep.join(out)


def v_card(r: R) -> str:
    digits = _card_digits(r)
    sep = r.choice(["", "", " ", "-"])
    return group_digits(digits, sep) if sep else digits


def _iban_compact(r: R) -> str:
    cc = r.choice(list(IBAN_SPECS))
    bban = "".join(
        r.choice(string.digits if t == "n" else string.ascii_uppercase if t == "a" else UPPER_DIGITS)
        for t in IBAN_SPECS[cc]
    )
    if cc == "BE":  # the Belgian account number carries its own mod-97 check
        check = int(bban[:10]) % 97 or 97
        bban = bban[:10] + f"{check:02d}"
    digits = 98 - _iban_num(bban + cc + "00") % 97
    return f"{cc}{digits:02d}{bban}"


def iban_written(r: R, compact: str) -> str:
    if r.random() < 0.5:
        return compact
    return " ".join(compact[i : i + 4] for i in range(0, len(compact), 4))


def v_iban(r: R) -> str:
    return iban_written(r, _iban_compact(r))


def v_ssn(r: R) -> str:
    while True:
        s = f"{r.randint(1, 899):03d}-{r.randint(1, 99):02d}-{r.randint(1, 9999):04d}"
        if ssn_ok(s):
            return s


def v_ip(r: R) -> str:
    x = r.random()
    if x < 0.2:
        return f"10.{r.randint(0, 255)}.{r.randint(0, 255)}.{r.randint(1, 254)}"
    if x < 0.3:
        return f"172.{r.randint(16, 31)}.{r.randint(0, 255)}.{r.randint(1, 254)}"
    if x < 0.4:
        return f"192.168.{r.randint(0, 255)}.{r.randint(1, 254)}"
    if x < 0.55:
        return f"{r.choice(['203.0.113', '198.51.100', '192.0.2'])}.{r.randint(1, 254)}"
    if x < 0.75:
        first = r.choice([n for n in range(1, 224) if n not in (10, 127, 172, 192)])
        return f"{first}.{r.randint(0, 255)}.{r.randint(0, 255)}.{r.randint(1, 254)}"
    if x < 0.85:
        return str(ipaddress.IPv6Address((0x20010DB8 << 96) | r.getrandbits(r.choice([16, 64, 96]))))
    if x < 0.92:
        return str(ipaddress.IPv6Address((0xFE80 << 112) | r.getrandbits(64)))
    return str(ipaddress.IPv6Address((r.choice([0x2A02, 0x2600, 0x2404, 0x2001]) << 112) | r.getrandbits(96)))


URI_SCHEMES = words("postgres postgresql mysql mongodb mongodb+srv redis rediss amqp amqps mssql jdbc:postgresql")
URI_PORTS = {"postgres": 5432, "postgresql": 5432, "jdbc:postgresql": 5432, "mysql": 3306, "mongodb": 27017}
URI_PORTS |= {"redis": 6379, "rediss": 6380, "amqp": 5672, "amqps": 5671, "mssql": 1433}


def v_uri(r: R) -> list[Seg]:
    scheme = r.choice(URI_SCHEMES)
    user = r.choice(["app", "postgres", "billing", "readonly", "admin", "svc_orders", "root", "etl"])
    if scheme.startswith("redis"):
        user = r.choice(["", "", "default"])
    pw = v_password(r, uri=True)
    if scheme == "mongodb+srv":
        host = f"cluster{r.randint(0, 9)}.{rs(r, string.ascii_lowercase + string.digits, 5)}.mongodb.net"
        tail = f"/{r.choice(['app', 'test', 'orders'])}?retryWrites=true&w=majority"
        return [f"{scheme}://{user}:", P(pw, "uri_credentials"), f"@{host}{tail}"]
    host = r.choice(HOSTS) if r.random() < 0.7 else f"{r.choice(SERVICES)}-db.{r.choice(COMPANY_DOMAINS)}"
    port = f":{URI_PORTS[scheme]}" if r.random() < 0.8 else ""
    if scheme.startswith("redis"):
        path = f"/{r.randint(0, 15)}"
    elif scheme.startswith("amqp"):
        path = r.choice(["/%2F", "/", f"/{r.choice(SERVICES)}"])
    else:
        path = f"/{r.choice(SERVICES)}{r.choice(['', '_prod', '_db'])}"
        path += r.choice(["", "", "?sslmode=require", "?authSource=admin", "?connect_timeout=10"])
    return [f"{scheme}://{user}:", P(pw, "uri_credentials"), f"@{host}{port}{path}"]


def v_bearer(r: R) -> str:
    while True:
        x = r.random()
        if x < 0.3:
            s = "ya29.a0" + rs(r, URLSAFE, r.randint(80, 140))
        elif x < 0.5:
            s = "00" + rs(r, ALNUM, 40)
        else:
            s = rs(r, ALNUM, r.randint(20, 48)) + r.choice(["", "", "-" + rs(r, ALNUM, 8), "." + rs(r, ALNUM, 12)])
        if not s.startswith("eyJ") and not any(rx.search(s) for rx in FORMATTED_RES.values()):
            return s


def v_basic(r: R) -> str:
    return b64(f"{a_user(r)}:{v_password(r)}".encode())


def v_azure(r: R) -> list[Seg]:
    cls = "azure_connection_string"
    if r.random() < 0.6:
        acct = f"{r.choice(WORDS)}{r.choice(['store', 'prod', 'data', 'logs'])}{r.randint(1, 999)}"
        head = f"DefaultEndpointsProtocol=https;AccountName={acct};AccountKey="
        tail = r.choice(
            [";EndpointSuffix=core.windows.net", "", f";BlobEndpoint=https://{acct}.blob.core.windows.net/"]
        )
        return [head, P(b64(r.randbytes(64)), cls), tail]
    ns = f"{r.choice(SERVICES)}-{r.choice(['prod', 'events', 'bus'])}"
    name = r.choice(["RootManageSharedAccessKey", "send-only", "listen-orders"])
    head = f"Endpoint=sb://{ns}.servicebus.windows.net/;SharedAccessKeyName={name};SharedAccessKey="
    return [head, P(b64(r.randbytes(32)), cls), r.choice(["", "", f";EntityPath={r.choice(SERVICES)}"])]


# --------------------------------------------------------------------------------------------------------------------
# Negative values

PLACEHOLDER_RE = re.compile(
    r"(?i)\$\{[A-Z0-9_]+\}|\$[A-Z_][A-Z0-9_]*|\{\{.*\}\}|\$\{\{.*\}\}|<[^<>]+>|\*{3,}|x{6,}|\[?redacted\]?|"
    r"change[-_]?me|your[-_].*[-_]here|__[A-Z_]+__|%\([a-z_]+\)s|null|none|todo"
)


def n_placeholder(r: R, name: str = "DB_PASSWORD") -> str:
    low = name.lower().replace("_", ".")
    return r.choice(
        [
            f"${{{name}}}",
            f"${name}",
            f"${{{{ secrets.{name} }}}}",
            f"{{{{ .Values.{low} }}}}",
            f"{{{{ secrets.{name.split('_')[-1]} }}}}",
            "<your-password>",
            f"<{name}>",
            "<YOUR_API_KEY>",
            "********",
            "*" * r.randint(6, 16),
            "REDACTED",
            "[REDACTED]",
            "changeme",
            "CHANGE_ME",
            "change-me",
            "your-api-key-here",
            "x" * r.randint(8, 24),
            f"__{name}__",
        ]
    )


def n_uuid(r: R) -> str:
    u = str(uuid.UUID(int=r.getrandbits(128), version=r.choice([4, 4, 4, 1])))
    return u.upper() if r.random() < 0.1 else u


def n_luhn_invalid(r: R) -> str:
    for _ in range(100):
        length = r.randint(13, 19)
        first = r.choice(["4", "5", "3", "6", "1", "9", "7", "2"])
        body = first + "".join(str(r.randint(0, 9)) for _ in range(length - 2))
        good = luhn_digit(body)
        digits = body + r.choice([d for d in "0123456789" if d != good])
        if r.random() < 0.35:
            sep = r.choice([" ", "-"])
            if len(digits) in (13, 15, 16, 19):
                return group_digits(digits, sep)
            return sep.join(digits[i : i + 4] for i in range(0, len(digits), 4))
        return digits
    raise AssertionError("unreachable")


def n_timestamp(r: R) -> str:
    t = a_time(r)
    ms = t.microsecond // 1000
    return r.choice(
        [
            f"{t:%Y-%m-%dT%H:%M:%S}Z",
            f"{t:%Y-%m-%dT%H:%M:%S}.{ms:03d}Z",
            f"{t:%Y-%m-%dT%H:%M:%S}.{ms:03d}+0{r.randint(1, 9)}:00",
            email.utils.format_datetime(t),
            str(int(t.timestamp())),
            str(int(t.timestamp() * 1000)),
            f"{t:%Y-%m-%d %H:%M:%S}.{ms:03d}",
            f"{t:%Y-%m-%d %H:%M:%S}",
        ]
    )


def n_version(r: R) -> str:
    a, b, c = r.randint(0, 24), r.randint(0, 40), r.randint(0, 30)
    return r.choice(
        [
            f"{a}.{b}.{c}",
            f"v{a}.{b}.{c}",
            f"v{a}.{b}.{c}-rc.{r.randint(1, 5)}",
            f"{a}.{b}.{c}-beta.{r.randint(1, 9)}+build.{r.randint(1, 999)}",
            f"{r.randint(1, 9)}.{b}.{c}.{r.randint(1, 99)}",
            f"{a}.{b}",
        ]
    )


def n_base64_image(r: R, uri: bool) -> str:
    if r.random() < 0.7:
        mime, head = "image/png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"
    else:
        mime, head = "image/jpeg", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01"
    data = b64(head + r.randbytes(r.randint(60, 1500)))
    return f"data:{mime};base64,{data}" if uri else data


def n_bad_iban(r: R) -> str:
    compact = _iban_compact(r)
    while True:
        digits = f"{r.randint(2, 98):02d}"
        bad = compact[:2] + digits + compact[4:]
        if digits != compact[2:4] and not iban_ok(bad):
            return iban_written(r, bad)


def n_bad_ssn(r: R) -> str:
    area, group, serial = f"{r.randint(1, 899):03d}", f"{r.randint(1, 99):02d}", f"{r.randint(1, 9999):04d}"
    which = r.choice(["000", "666", "9xx", "00", "0000"])
    if which in ("000", "666"):
        area = which
    elif which == "9xx":
        area = str(r.randint(900, 999))
    elif which == "00":
        group = "00"
    else:
        serial = "0000"
    return f"{area}-{group}-{serial}"


def n_pem_public(r: R) -> str:
    if r.random() < 0.6:
        return pem_block(r, "CERTIFICATE", "MIIDdzCCAl+gAwIBAgIU", r.choice([1120, 1280, 1600]))
    label = r.choice(["PUBLIC KEY", "PUBLIC KEY", "RSA PUBLIC KEY"])
    return pem_block(r, label, "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA", 392)


NPM_PACKAGES = words(
    "@types/node @babel/core @aws-sdk/client-s3 @nestjs/common @vitejs/plugin-react @angular/core lodash express "
    "react typescript left-pad inflight"
)


def n_npm_spec(r: R) -> str:
    return f"{r.choice(NPM_PACKAGES)}@{r.choice(['', '^', '~'])}{r.randint(1, 22)}.{r.randint(0, 40)}.{r.randint(0, 9)}"


def n_url(r: R) -> str:
    return r.choice(
        [
            f"postgres://{r.choice(HOSTS)}:5432/{r.choice(SERVICES)}",
            f"postgresql://{r.choice(['app', 'readonly'])}@{r.choice(HOSTS)}:5432/{r.choice(SERVICES)}",
            f"redis://{r.choice(HOSTS)}:6379/{r.randint(0, 15)}",
            f"mongodb://mongo-0.mongo:27017,mongo-1.mongo:27017/{r.choice(SERVICES)}?replicaSet=rs0",
            "amqp://rabbitmq.prod:5672/%2F",
            f"https://{r.choice(['git', 'deploy', 'ci'])}@github.com/{r.choice(LAST)}/{r.choice(SERVICES)}.git",
            f"https://{r.choice(FIRST)}@github.com/{r.choice(COMPANY_DOMAINS).split('.')[0]}/{r.choice(SERVICES)}",
            f"ssh://git@gitlab.com/{r.choice(LAST)}/{r.choice(SERVICES)}.git",
            f"https://api.{r.choice(COMPANY_DOMAINS)}{a_path(r)}?page={r.randint(2, 40)}&per_page=50",
            f"https://{r.choice(COMPANY_DOMAINS)}/docs/{r.choice(PATH_SEGS)}#{r.choice(PATH_SEGS)}",
            f"http://localhost:{r.choice([3000, 8080, 8000, 5173])}{a_path(r)}",
        ]
    )


def n_path(r: R) -> str:
    return r.choice(
        [
            "/var/lib/postgresql/data",
            "/etc/ssl/private/server.key",
            "/run/secrets/db_password",
            "/run/secrets/api_token",
            "~/.ssh/id_ed25519",
            "~/.aws/credentials",
            "./config/secrets.yaml",
            "/home/app/.config/gh/hosts.yml",
            f"/srv/{r.choice(SERVICES)}/releases/{r.randint(100, 999)}/current",
            f"/var/log/{r.choice(SERVICES)}/app.log",
            f"C:\\Users\\{r.choice(FIRST)}\\AppData\\Roaming\\npm",
            "/etc/kubernetes/pki/apiserver.key",
            f"/opt/{r.choice(SERVICES)}/keystore.jks",
        ]
    )


def n_duration(r: R) -> str:
    return r.choice(
        [
            f"{r.randint(1, 120)}s",
            f"{r.randint(50, 900)}ms",
            f"{r.randint(1, 23)}h{r.randint(1, 59)}m",
            "PT15M",
            f"{r.randint(1, 48)}h",
            f"{r.randint(1, 30)}m",
            str(r.choice([30, 60, 300, 3600, 86400])),
        ]
    )


def n_hex_colour(r: R) -> str:
    return "#" + r.choice([rs(r, HEX, 6), rs(r, HEX, 6).upper(), rs(r, HEX, 3), rs(r, HEX, 8)])


def n_sha256(r: R) -> str:
    return "sha256:" + rs(r, HEX, 64)


def n_integrity(r: R) -> str:
    return "sha512-" + b64(r.randbytes(64)) if r.random() < 0.85 else "sha1-" + b64(r.randbytes(20))


def n_go_sum(r: R) -> str:
    return "h1:" + b64(r.randbytes(32))


# --------------------------------------------------------------------------------------------------------------------
# Keys and serializers

ACRONYMS = {"api": "API", "aws": "AWS", "id": "ID", "url": "URL", "ssn": "SSN", "iban": "IBAN", "jwt": "JWT"}
ACRONYMS |= {"gcp": "GCP", "hmac": "HMAC", "dsn": "DSN", "pat": "PAT", "tls": "TLS", "ssh": "SSH", "uri": "URI"}


def key_text(key: Key, style: str) -> str:
    if isinstance(key, str):
        return key
    w = list(key)
    if style == "upper":
        return "_".join(w).upper()
    if style == "camel":
        return w[0] + "".join(x.capitalize() for x in w[1:])
    if style == "pascal":
        return "".join(x.capitalize() for x in w)
    if style == "kebab":
        return "-".join(w)
    if style == "dot":
        return ".".join(w)
    if style == "title":
        words = [ACRONYMS.get(x, x) for x in w]
        return " ".join([words[0][:1].upper() + words[0][1:], *words[1:]])
    return "_".join(w)


def _jesc(s: str) -> str:
    return json.dumps(s)[1:-1]


def json_segs(obj: object, indent: int | None, compact: bool = False, lvl: int = 0) -> list[Seg]:
    out: list[Seg] = []
    colon, comma = (":", ",") if compact else (": ", ", ")
    if isinstance(obj, V):
        out.extend(obj.segs if obj.raw else ['"', *mapseg(obj.segs, _jesc), '"'])
    elif isinstance(obj, dict | list):
        pairs = list(obj.items()) if isinstance(obj, dict) else [(None, v) for v in obj]
        o, c = ("{", "}") if isinstance(obj, dict) else ("[", "]")
        if not pairs:
            return [o + c]
        out.append(o)
        for i, (k, v) in enumerate(pairs):
            if i:
                out.append("," if indent is not None else comma)
            if indent is not None:
                out.append("\n" + " " * (indent * (lvl + 1)))
            if k is not None:
                out.append(json.dumps(k) + colon)
            out.extend(json_segs(v, indent, compact, lvl + 1))
        if indent is not None:
            out.append("\n" + " " * (indent * lvl))
        out.append(c)
    else:
        out.append(json.dumps(obj))
    return out


_YAML_SPECIAL = re.compile(r"(?i)true|false|yes|no|on|off|null|~|[-+]?[0-9_.]+(e[-+]?[0-9]+)?|0x[0-9a-f]+")


def yaml_plain_ok(s: str) -> bool:
    return (
        bool(re.fullmatch(r"[A-Za-z0-9_./$<(][^\n'\"#]*", s))
        and ": " not in s
        and not s.endswith((":", " "))
        and not _YAML_SPECIAL.fullmatch(s)
    )


def yaml_scalar(r: R, v: object) -> list[Seg]:
    if isinstance(v, V):
        t = plain(v.segs)
        if v.raw:
            return list(v.segs)
        q = r.choice(["", "", '"', "'"]) if yaml_plain_ok(t) else r.choice(['"', '"', "'"])
        if q == '"':
            return ['"', *mapseg(v.segs, _jesc), '"']
        if q == "'":
            return ["'", *mapseg(v.segs, lambda s: s.replace("'", "''")), "'"]
        return list(v.segs)
    if isinstance(v, bool):
        return ["true" if v else "false"]
    if v is None:
        return ["null"]
    if isinstance(v, int | float):
        return [str(v)]
    s = str(v)
    return [s if yaml_plain_ok(s) else json.dumps(s)]


def _indent_lines(s: str, ind: str) -> str:
    return s.replace("\n", "\n" + ind)


def yaml_segs(r: R, d: dict[str, object], lvl: int = 0, first: str | None = None) -> list[Seg]:
    out: list[Seg] = []
    for i, (k, v) in enumerate(d.items()):
        pre = first if (i == 0 and first is not None) else "  " * lvl
        kk = k if re.fullmatch(r"[A-Za-z0-9_.\-/]+", k) else json.dumps(k)
        if isinstance(v, dict) and v:
            out.append(f"{pre}{kk}:\n")
            out.extend(yaml_segs(r, v, lvl + 1))
        elif isinstance(v, list) and v:
            out.append(f"{pre}{kk}:\n")
            for item in v:
                dash = "  " * (lvl + 1) + "- "
                if isinstance(item, dict) and item:
                    out.extend(yaml_segs(r, item, lvl + 2, first=dash))
                else:
                    out.extend([dash, *yaml_scalar(r, item), "\n"])
        elif isinstance(v, V) and "\n" in plain(v.segs):
            ind = "  " * (lvl + 1)
            out.extend([f"{pre}{kk}: |\n", ind, *mapseg(v.segs, partial(_indent_lines, ind=ind)), "\n"])
        elif isinstance(v, dict | list):
            out.append(f"{pre}{kk}: {'{}' if isinstance(v, dict) else '[]'}\n")
        else:
            out.extend([f"{pre}{kk}: ", *yaml_scalar(r, v), "\n"])
    return out


# --------------------------------------------------------------------------------------------------------------------
# Positive items: one factory per class, ``(r, ctx) -> Item``, and the formats each class can appear in.

LINE_FMTS = frozenset({"env", "log", "shell", "code", "stacktrace", "email"})
TREE_FMTS = frozenset({"json", "yaml"})
KV_FMTS = LINE_FMTS | TREE_FMTS

PASSWORD_KEYS: tuple[tuple[str, ...], ...] = tuple(
    tuple(k.split("_"))
    for k in words(
        "password password db_password database_password postgres_password mysql_root_password redis_password "
        "smtp_password admin_password ldap_bind_password keystore_password passwd pwd db_pwd secret "
        "client_secret client_secret app_secret jwt_secret webhook_secret consumer_secret secret_key token "
        "auth_token access_token refresh_token bot_token private_token api_key api_key apikey service_api_key"
    )
)
HIGH_ENTROPY_KEYS: tuple[tuple[str, ...], ...] = tuple(
    tuple(k.split("_"))
    for k in words(
        "session_key signing_key encryption_key hmac hmac_key signature_key credentials master_key cookie_salt "
        "salt pepper private_key_id aes_key license_key cipher_key shared_key jwt_signing_key app_key hash_salt "
        "data_key csrf_key storage_key"
    )
)


def _kv(keys: Sequence[Key], value: Callable[[R], str], cls: str) -> Callable[[R, Ctx], Item]:
    def make(r: R, ctx: Ctx) -> Item:
        return KV(r.choice(keys), [P(value(r), cls)])

    return make


def _q(r: R) -> str:
    return r.choice(['"', "'"])


def _curl(r: R, header: list[Seg], url: str | None = None) -> Raw:
    url = url or f"https://api.{r.choice(COMPANY_DOMAINS)}{a_path(r)}"
    q = _q(r)
    flag = r.choice(["-H", "-H", "--header"])
    opts = r.choice(["-s", "-sS", "-fsSL", "-v", "-X POST", "-s -X GET"])
    return Raw([f"curl {opts} {flag} {q}", *header, f"{q} {url}", r.choice(["", " | jq .", " -o out.json"])])


def p_aws_key_id(r: R, ctx: Ctx) -> Item:
    cls = "aws_access_key_id"
    if ctx.fmt == "shell" and r.random() < 0.35:
        prof = r.choice(["default", "prod", "staging", "ci"])
        sec = P(v_aws_secret(r), "aws_secret_access_key")
        kid = P(v_aws_key_id(r), cls)
        body: list[Seg] = [f"cat ~/.aws/credentials\n[{prof}]\naws_access_key_id = ", kid, "\naws_secret_access_key = "]
        return Raw([*body, sec, f"\nregion = {r.choice(REGIONS)}"])
    if ctx.fmt in ("log", "email") and r.random() < 0.4:
        kid = P(v_aws_key_id(r), cls)
        return Raw([r.choice(["using access key ", "credentials for access key ", "rotated key "]), kid])
    keys = [("aws", "access", "key", "id"), ("access", "key", "id"), ("aws", "key", "id")]
    return KV(r.choice(keys), [P(v_aws_key_id(r), cls)])


def p_aws_secret(r: R, ctx: Ctx) -> Item:
    keys = [("aws", "secret", "access", "key"), ("aws", "secret", "access", "key"), ("secret", "access", "key")]
    return KV(r.choice(keys), [P(v_aws_secret(r), "aws_secret_access_key")])


def p_gcp(r: R, ctx: Ctx) -> Item:
    cls = "gcp_api_key"
    if ctx.fmt in ("log", "shell") and r.random() < 0.4:
        api = r.choice(
            ["maps/api/geocode/json?address=Berlin", "youtube/v3/search?part=snippet&q=mcp", "maps/api/js?v=3"]
        )
        host = "www.googleapis.com" if "youtube" in api else "maps.googleapis.com"
        url: list[Seg] = [f"https://{host}/{api}&key=", P(v_gcp_key(r), cls)]
        if ctx.fmt == "shell":
            return Raw(["curl -s ", '"', *url, '"'])
        return Raw(["GET ", *url, f" -> 200 ({r.randint(20, 400)} ms)"])
    keys = [("google", "api", "key"), ("gcp", "api", "key"), ("maps", "api", "key"), ("firebase", "api", "key")]
    return KV(r.choice([*keys, ("api", "key")]), [P(v_gcp_key(r), cls)])


def p_azure(r: R, ctx: Ctx) -> Item:
    if ctx.fmt == "shell" and r.random() < 0.4:
        q = _q(r)
        cmd = f"az storage blob list --container-name {r.choice(SERVICES)} --connection-string {q}"
        return Raw([cmd, *v_azure(r), q])
    keys: list[Key] = [("azure", "storage", "connection", "string"), ("connection", "string")]
    keys += [("service", "bus", "connection", "string"), "AzureWebJobsStorage"]
    return KV(r.choice(keys), v_azure(r))


def p_github(r: R, ctx: Ctx) -> Item:
    cls = "github_token"
    tok = P(v_github(r), cls)
    if ctx.fmt == "shell" and r.random() < 0.5:
        repo = f"{r.choice(LAST)}/{r.choice(SERVICES)}"
        return r.choice(
            [
                Raw(["gh auth token\n", tok]),
                Raw(["git remote set-url origin https://x-access-token:", tok, f"@github.com/{repo}.git"]),
                _curl(r, ["Authorization: token ", tok], f"https://api.github.com/repos/{repo}/pulls"),
                _curl(r, ["Authorization: Bearer ", tok], "https://api.github.com/user"),
            ]
        )
    if ctx.fmt == "log" and r.random() < 0.3:
        return Raw([f"fetching https://{r.choice(['x-access-token', 'oauth2'])}:", tok, "@github.com/acme/infra.git"])
    if ctx.fmt == "email" and r.random() < 0.5:
        return Raw(["Here is the token for the deploy bot: ", tok])
    return KV(r.choice([("github", "token"), ("gh", "token"), ("github", "pat"), ("token",)]), [tok])


def p_gitlab(r: R, ctx: Ctx) -> Item:
    cls = "gitlab_token"
    tok = P(v_gitlab(r), cls)
    if ctx.fmt == "shell" and r.random() < 0.5:
        proj = f"{r.choice(LAST)}/{r.choice(SERVICES)}"
        return r.choice(
            [
                _curl(r, ["PRIVATE-TOKEN: ", tok], f"https://gitlab.com/api/v4/projects/{r.randint(100, 99999)}"),
                Raw(["git clone https://oauth2:", tok, f"@gitlab.com/{proj}.git"]),
            ]
        )
    return KV(r.choice([("gitlab", "token"), ("gitlab", "private", "token"), ("gl", "token"), ("ci", "pat")]), [tok])


def p_slack_token(r: R, ctx: Ctx) -> Item:
    tok = P(v_slack_token(r), "slack_token")
    if ctx.fmt == "shell" and r.random() < 0.5:
        return _curl(r, ["Authorization: Bearer ", tok], "https://slack.com/api/chat.postMessage")
    return KV(r.choice([("slack", "bot", "token"), ("slack", "token"), ("slack", "user", "token")]), [tok])


def p_slack_webhook(r: R, ctx: Ctx) -> Item:
    url = P(v_slack_webhook(r), "slack_webhook")
    if ctx.fmt == "shell" and r.random() < 0.5:
        q = _q(r)
        body = '{"text":"deploy finished"}' if q == "'" else '{\\"text\\":\\"deploy finished\\"}'
        return Raw([f"curl -X POST -H {q}Content-type: application/json{q} --data {q}{body}{q} ", url])
    if ctx.fmt in ("log", "email") and r.random() < 0.5:
        return Raw([r.choice(["posting alert to ", "notification sent via ", "webhook: "]), url])
    return KV(
        r.choice([("slack", "webhook", "url"), ("webhook", "url"), ("alerts", "webhook"), ("slack", "hook")]), [url]
    )


def p_stripe(r: R, ctx: Ctx) -> Item:
    key = P(v_stripe(r), "stripe_key")
    if ctx.fmt == "shell" and r.random() < 0.4:
        return Raw([f"curl https://api.stripe.com/v1/{r.choice(['charges', 'customers', 'refunds'])} -u ", key, ":"])
    return KV(
        r.choice([("stripe", "secret", "key"), ("stripe", "api", "key"), ("stripe", "key"), ("stripe", "sk")]), [key]
    )


def p_llm(r: R, ctx: Ctx) -> Item:
    v = v_llm(r)
    key = P(v, "llm_api_key")
    if ctx.fmt == "shell" and r.random() < 0.5:
        if v.startswith("sk-ant"):
            return _curl(r, ["x-api-key: ", key], "https://api.anthropic.com/v1/messages")
        return _curl(r, ["Authorization: Bearer ", key], "https://api.openai.com/v1/chat/completions")
    keys = [("anthropic", "api", "key")] if v.startswith("sk-ant") else [("openai", "api", "key"), ("openai", "key")]
    return KV(r.choice([*keys, ("llm", "api", "key")]), [key])


def p_jwt(r: R, ctx: Ctx) -> Item:
    tok = P(v_jwt(r), "jwt")
    if ctx.fmt == "shell" and r.random() < 0.5:
        return _curl(r, ["Authorization: Bearer ", tok])
    if ctx.fmt == "log" and r.random() < 0.4:
        return r.choice(
            [
                Raw(["GET /oauth/callback#access_token=", tok, "&token_type=Bearer&expires_in=3600"]),
                Raw(["outgoing request headers={'Authorization': 'Bearer ", tok, "', 'Accept': 'application/json'}"]),
            ]
        )
    keys: list[Key] = [("id", "token"), ("access", "token"), ("jwt",), ("refresh", "token"), ("session", "token")]
    return KV(r.choice(keys), [tok])


def p_private_key(r: R, ctx: Ctx) -> Item:
    pem = P(v_private_key(r), "private_key")
    if ctx.fmt in ("shell", "email") and r.random() < 0.6:
        lead = "cat ~/.ssh/id_rsa\n" if ctx.fmt == "shell" else "The key for the bastion host is below:\n\n"
        return Raw([lead, pem])
    keys: list[Key] = [("private", "key"), ("ssh", "private", "key"), ("signing", "private", "key"), ("tls", "key")]
    if ctx.fmt == "yaml":
        keys += ["tls.key", "ssh-privatekey", "id_rsa"]
    return KV(r.choice(keys), [pem])


def p_uri(r: R, ctx: Ctx) -> Item:
    uri = v_uri(r)
    if ctx.fmt == "shell" and r.random() < 0.5:
        scheme = plain(uri).split("://")[0]
        q = _q(r)
        if scheme.startswith("redis"):
            return Raw(["redis-cli -u ", *uri, " ping"])
        if scheme.startswith("mongodb"):
            return Raw([f"mongosh {q}", *uri, q])
        return Raw([f"psql {q}", *uri, f"{q} -c 'select count(*) from orders'"])
    if ctx.fmt == "log" and r.random() < 0.5:
        return Raw([r.choice(["connecting to ", "opening pool for ", "broker url: "]), *uri])
    if ctx.fmt == "stacktrace" and r.random() < 0.5:
        return Raw(["Could not parse URL from string '", *uri, "'"])
    keys: list[Key] = [("database", "url"), ("dsn",), ("url",), ("broker", "url"), ("connection", "uri")]
    keys += [("sqlalchemy", "database", "uri"), ("datasource", "url"), ("redis", "url"), ("mongo", "uri")]
    return KV(r.choice(keys), uri)


def p_http_auth(r: R, ctx: Ctx) -> Item:
    cls = "http_auth"
    scheme, tok = (
        ("Basic ", v_basic(r)) if r.random() < 0.4 else (r.choice(["Bearer ", "Bearer ", "bearer "]), v_bearer(r))
    )
    lab = P(tok, cls)
    name = r.choice(["Authorization", "Authorization", "authorization"])
    if ctx.fmt == "shell":
        return _curl(r, [f"{name}: {scheme}", lab])
    if ctx.fmt == "log":
        host = f"api.{r.choice(COMPANY_DOMAINS)}"
        return r.choice(
            [
                Raw(
                    [f"send: b'GET {a_path(r)} HTTP/1.1\\r\\nHost: {host}\\r\\n{name}: {scheme}", lab, "\\r\\n\\r\\n'"]
                ),
                Raw([f"> {name}: {scheme}", lab]),
                Raw([f"request headers: {{'{name}': '{scheme}", lab, "', 'User-Agent': 'python-requests/2.32.3'}"]),
            ]
        )
    if ctx.fmt == "stacktrace":
        return Raw(
            [
                f"401 Client Error: Unauthorized for url: https://api.internal{a_path(r)} (headers: {name}: {scheme}",
                lab,
                ")",
            ]
        )
    return KV(name, [scheme, lab])


def p_email(r: R, ctx: Ctx) -> Item:
    addr = P(v_email(r), "email")
    if ctx.fmt in ("log", "email", "stacktrace") and r.random() < 0.6:
        if ctx.fmt == "email" and r.random() < 0.25:
            return Raw(['Reach the on-call team via <a href="mailto:', addr, f'">{r.choice(ROLES)}</a>.'])
        lead = r.choice(["sent password reset link to ", "invoice emailed to ", "user ", "please loop in ", "cc: "])
        return Raw([lead, addr, r.choice(["", "", " (queued)", " today", ".", ",", ";", ")"])])
    keys = [("email",), ("contact", "email"), ("billing", "email"), ("owner",), ("reply", "to"), ("admin", "email")]
    return KV(r.choice(keys), [addr])


def p_phone(r: R, ctx: Ctx) -> Item:
    num = P(v_phone(r), "phone_number")
    if ctx.fmt in ("log", "email") and r.random() < 0.6:
        lead = r.choice(["SMS delivered to ", "call me on ", "Mobile: ", "voice OTP sent to ", "Tel. "])
        return Raw([lead, num, r.choice(["", "", ".", ",", " (mobile)"])])
    return KV(r.choice([("phone",), ("mobile",), ("phone", "number"), ("contact", "phone"), ("tel",)]), [num])


def p_card(r: R, ctx: Ctx) -> Item:
    cc = P(v_card(r), "credit_card")
    if ctx.fmt in ("log", "email", "stacktrace") and r.random() < 0.6:
        lead = r.choice(["charge declined for card ", "my card number is ", "card=", "tokenizing PAN "])
        return Raw([lead, cc, r.choice(["", "", ".", ",", " (expired)"])])
    return KV(r.choice([("card", "number"), ("pan",), ("cc", "number"), ("credit", "card")]), [cc])


def p_iban(r: R, ctx: Ctx) -> Item:
    iban = P(v_iban(r), "iban")
    if ctx.fmt in ("log", "email") and r.random() < 0.6:
        lead = r.choice(["please wire the deposit to ", "payout queued to ", "IBAN: ", "new bank account "])
        return Raw([lead, iban, r.choice(["", "", ".", ","])])
    return KV(r.choice([("iban",), ("payout", "iban"), ("bank", "account", "iban"), ("account", "iban")]), [iban])


def p_ssn(r: R, ctx: Ctx) -> Item:
    ssn = P(v_ssn(r), "us_ssn")
    if ctx.fmt == "email" and r.random() < 0.5:
        return Raw([r.choice(["My social security number is ", "SSN: ", "Employee SSN "]), ssn])
    return KV(r.choice([("ssn",), ("social", "security", "number"), ("employee", "ssn"), ("ssn",)]), [ssn])


def p_password(r: R, ctx: Ctx) -> Item:
    cls = "password_assignment"
    key = r.choice(PASSWORD_KEYS)
    wordy = any(w in ("password", "passwd", "pwd") for w in key)
    val = v_password(r) if wordy or r.random() < 0.3 else v_opaque_token(r)
    if ctx.fmt in ("log", "shell") and key[-1] in ("token", "apikey", "key", "secret") and r.random() < 0.35:
        url = f"https://api.{r.choice(COMPANY_DOMAINS)}/v1/export?{key_text(key, 'snake')}="
        tail = f"&format={r.choice(['csv', 'json'])}"
        return Raw(
            [f'curl -s "{url}', P(val, cls), f'{tail}"'] if ctx.fmt == "shell" else [f"GET {url}", P(val, cls), tail]
        )
    if ctx.fmt == "shell" and r.random() < 0.3:
        words = [w for w in key if w != "apikey"] or ["password"]
        return Raw([f"./bin/{r.choice(SERVICES)} migrate --{'-'.join(words)}=", P(val, cls)])
    if ctx.fmt == "code" and ctx.lang == "properties" and r.random() < 0.4:
        return KV(f"spring.datasource.{key_text(key, 'kebab')}", [P(val, cls)])
    x = r.random()
    if x < 0.07:
        host = f"tcp:{r.choice(SERVICES)}-sql.database.windows.net,1433"
        head = f"Server={host};Database={r.choice(SERVICES)};User ID={r.choice(['sa', 'app'])};Password="
        return KV(("connection", "string"), [head, P(v_password(r), cls), ";Encrypt=True;"])
    if x < 0.12:
        head = f"jdbc:mysql://{r.choice(HOSTS)}:3306/{r.choice(SERVICES)}?user=app&password="
        return KV(("jdbc", "url"), [head, P(v_password(r), cls), "&useSSL=true"])
    return KV(key, [P(val, cls)])


def p_high_entropy(r: R, ctx: Ctx) -> Item:
    return KV(r.choice(HIGH_ENTROPY_KEYS), [P(v_high_entropy(r), "high_entropy_secret")])


def p_ip_line(r: R, ctx: Ctx) -> Item:
    cls = "ip_address"
    ip = P(v_ip(r), cls)
    t = a_time(r)
    method, path = r.choice(["GET", "GET", "POST", "PUT", "DELETE"]), a_path(r)
    status, size = r.choice([200, 200, 201, 204, 301, 404, 500]), r.randint(0, 90000)
    ua = r.choice(["curl/8.5.0", "Mozilla/5.0 (X11; Linux x86_64)", "python-requests/2.32.3", "Go-http-client/2.0"])
    x = r.random()
    if x < 0.45:
        when = f"[{t:%d/%b/%Y:%H:%M:%S} +0000]"
        return Raw([ip, f' - - {when} "{method} {path} HTTP/1.1" {status} {size} "-" "{ua}"'], whole=True)
    if x < 0.6:
        return Raw(
            [f"{t:%Y-%m-%dT%H:%M:%S}Z {method} {path} {status} client_ip=", ip, f" latency_ms={r.randint(1, 900)}"],
            whole=True,
        )
    if x < 0.75:
        proxy = P(v_ip(r), cls)
        return Raw([f"{t:%Y-%m-%dT%H:%M:%S}Z request {path} X-Forwarded-For: ", ip, ", ", proxy], whole=True)
    if x < 0.9:
        return Raw(
            [f'{{"time":"{t:%Y-%m-%dT%H:%M:%S}Z","remote_addr":"', ip, f'","method":"{method}","status":{status}}}'],
            whole=True,
        )
    return Raw(
        [
            f"{t:%b %d %H:%M:%S} bastion sshd[{r.randint(300, 40000)}]: Accepted publickey for deploy from ",
            ip,
            f" port {r.randint(30000, 65000)} ssh2",
        ],
        whole=True,
    )


POS_FACTORIES: dict[str, Callable[[R, Ctx], Item]] = {
    "aws_access_key_id": p_aws_key_id,
    "aws_secret_access_key": p_aws_secret,
    "gcp_api_key": p_gcp,
    "azure_connection_string": p_azure,
    "github_token": p_github,
    "gitlab_token": p_gitlab,
    "slack_token": p_slack_token,
    "slack_webhook": p_slack_webhook,
    "stripe_key": p_stripe,
    "llm_api_key": p_llm,
    "jwt": p_jwt,
    "private_key": p_private_key,
    "uri_credentials": p_uri,
    "http_auth": p_http_auth,
    "email": p_email,
    "credit_card": p_card,
    "iban": p_iban,
    "us_ssn": p_ssn,
    "password_assignment": p_password,
    "high_entropy_secret": p_high_entropy,
    "phone_number": p_phone,
}
# Where each class may appear (a realistic place for it, in a form that format can carry).
POS_FMTS: dict[str, frozenset[str]] = {
    "aws_access_key_id": KV_FMTS,
    "aws_secret_access_key": KV_FMTS,
    "gcp_api_key": KV_FMTS,
    "azure_connection_string": KV_FMTS - {"email"},
    "github_token": KV_FMTS,
    "gitlab_token": KV_FMTS,
    "slack_token": KV_FMTS - {"email"},
    "slack_webhook": KV_FMTS,
    "stripe_key": KV_FMTS,
    "llm_api_key": KV_FMTS,
    "jwt": KV_FMTS,
    "private_key": frozenset({"env", "yaml", "json", "code", "shell", "email"}),
    "uri_credentials": KV_FMTS,
    "http_auth": frozenset({"json", "yaml", "code", "log", "shell", "stacktrace"}),
    "email": KV_FMTS,
    "credit_card": KV_FMTS - {"env", "code"},
    "iban": KV_FMTS - {"code"},
    "us_ssn": frozenset({"json", "yaml", "log", "email", "stacktrace"}),
    "password_assignment": KV_FMTS,
    "high_entropy_secret": KV_FMTS - {"email"},
    "phone_number": KV_FMTS - {"code"},
}


def pos_ok(cls: str, ctx: Ctx) -> bool:
    if ctx.fmt not in POS_FMTS[cls]:
        return False
    if ctx.fmt == "code" and ctx.lang == "properties" and cls in ("private_key", "http_auth"):
        return False
    return not (ctx.fmt == "json" and ctx.tmpl == "mcp" and cls in ("private_key", "http_auth"))


# --------------------------------------------------------------------------------------------------------------------
# Hard-negative items: one factory per kind, and the formats each kind can appear in.


def q_uuid(r: R, ctx: Ctx) -> Item:
    u = N(n_uuid(r), "uuid")
    if ctx.fmt in ("log", "stacktrace") and r.random() < 0.5:
        return Raw([r.choice(["job ", "request_id=", "processing batch ", "trace "]), u, r.choice(["", " completed"])])
    if ctx.fmt == "shell" and r.random() < 0.5:
        return Raw([f"kubectl get pod {a_service(r)}-0 -o jsonpath='{{.metadata.uid}}'\n", u])
    keys: list[Key] = [("id",), ("request", "id"), ("correlation", "id"), ("tenant", "id"), ("uid",)]
    keys += [("idempotency", "key"), ("installation", "id"), ("external", "id"), ("trace", "id")]
    return KV(r.choice(keys), [u])


def q_git_sha(r: R, ctx: Ctx) -> Item:
    def sha() -> Lab:
        return N(rs(r, HEX, 40), "git_sha")

    if ctx.fmt == "shell" and r.random() < 0.6:
        if r.random() < 0.5:
            return Raw(["git rev-parse HEAD\n", sha()])
        return Raw(["git log -3 --format=%H\n", sha(), "\n", sha(), "\n", sha()])
    if ctx.fmt in ("log", "stacktrace") and r.random() < 0.5:
        return Raw([r.choice(["deploying revision ", "checked out ", "build cache hit for commit "]), sha()])
    keys = [
        ("commit",),
        ("sha",),
        ("revision",),
        ("git", "sha"),
        ("head", "sha"),
        ("source", "version"),
        ("build", "commit"),
    ]
    return KV(r.choice(keys), [sha()])


COMMIT_MSGS = (
    "fix: handle empty cart",
    "feat(api): add pagination to /orders",
    "chore(deps): bump lodash from 4.17.20 to 4.17.21",
    "refactor: extract retry policy",
    "docs: update runbook",
    "Merge pull request #4812 from acme/feature/search",
    "test: cover the timeout path",
    "ci: cache node_modules",
)


def q_git_short(r: R, ctx: Ctx) -> Item:
    def short() -> Lab:
        return N(rs(r, HEX, r.randint(7, 12)), "git_sha_short")

    if ctx.fmt == "shell" and r.random() < 0.6:
        lines: list[Seg] = [f"git log --oneline -n {(k := r.randint(2, 5))}"]
        for _ in range(k):
            lines += ["\n", short(), " " + r.choice(COMMIT_MSGS)]
        return Raw(lines)
    if ctx.fmt in ("log", "stacktrace") and r.random() < 0.5:
        return Raw(["HEAD is now at ", short(), " " + r.choice(COMMIT_MSGS)])
    if r.random() < 0.5:
        return KV(("image",), [f"registry.{r.choice(COMPANY_DOMAINS)}/{a_service(r)}:", short()])
    return KV(r.choice([("short", "sha"), ("git", "rev"), ("build", "ref")]), [short()])


def q_integrity(r: R, ctx: Ctx) -> Item:
    spec = n_npm_spec(r).lstrip("^~")
    if ctx.fmt == "shell":
        name, ver = spec.rsplit("@", 1)
        lines: list[Seg] = [f"grep -A3 '\"node_modules/{name}\"' package-lock.json\n"]
        lines += [f'  "node_modules/{name}": {{\n    "version": "{ver}",\n    "resolved": "https://registry.npmjs.org/']
        lines += [
            f'{name}/-/{name.split("/")[-1]}-{ver}.tgz",\n    "integrity": "',
            N(n_integrity(r), "npm_integrity"),
            '",',
        ]
        return Raw(lines)
    return KV(("integrity",), [N(n_integrity(r), "npm_integrity")])


def q_sha256(r: R, ctx: Ctx) -> Item:
    if ctx.fmt == "shell" and r.random() < 0.6:
        f = f"dist/{a_service(r)}-{n_version(r).lstrip('v')}.tar.gz"
        return Raw([f"sha256sum {f}\n", N(rs(r, HEX, 64), "sha256_digest"), f"  {f}"])
    val = n_sha256(r) if r.random() < 0.6 else rs(r, HEX, 64)
    return KV(
        r.choice([("checksum",), ("digest",), ("sha256",), ("content", "digest"), ("artifact", "sha256")]),
        [N(val, "sha256_digest")],
    )


def q_pip_hash(r: R, ctx: Ctx) -> Item:
    pkg = r.choice(["requests", "urllib3", "certifi", "idna", "charset-normalizer", "pydantic", "sqlalchemy"])
    lines: list[Seg] = [f"pip hash dist/{pkg}-{n_version(r).lstrip('v')}-py3-none-any.whl\n"]
    lines += [f"dist/{pkg}.whl:\n--hash=", N("sha256:" + rs(r, HEX, 64), "pip_hash")]
    return Raw(lines)


GO_MODULES = words(
    "golang.org/x/net golang.org/x/sys github.com/stretchr/testify github.com/google/uuid google.golang.org/grpc "
    "github.com/prometheus/client_golang go.uber.org/zap"
)


def go_sum_lines(r: R, k: int) -> list[Seg]:
    out: list[Seg] = []
    for i in range(k):
        mod, ver = r.choice(GO_MODULES), f"v{r.randint(0, 1)}.{r.randint(0, 40)}.{r.randint(0, 9)}"
        for suffix in ("", "/go.mod"):
            out += ["\n" if out or i else "", f"{mod} {ver}{suffix} ", N(n_go_sum(r), "go_sum_hash")]
    return out


def q_go_sum(r: R, ctx: Ctx) -> Item:
    return Raw([f"grep {r.choice(GO_MODULES).split('/')[-1]} go.sum\n", *go_sum_lines(r, r.randint(1, 2))])


def q_luhn(r: R, ctx: Ctx) -> Item:
    n = N(n_luhn_invalid(r), "luhn_invalid_number")
    if ctx.fmt in ("log", "stacktrace") and r.random() < 0.5:
        return Raw(
            [
                r.choice(["order ", "shipment tracking ", "refund reference ", "invoice "]),
                n,
                r.choice(["", " shipped", " created"]),
            ]
        )
    keys = [("order", "number"), ("tracking", "number"), ("reference",), ("invoice", "number"), ("transaction", "ref")]
    return KV(r.choice([*keys, ("awb",), ("account", "ref")]), [n])


def q_timestamp(r: R, ctx: Ctx) -> Item:
    ts = n_timestamp(r)
    lab = N(ts, "timestamp")
    if ctx.fmt in ("log", "stacktrace", "shell") and r.random() < 0.5:
        if ctx.fmt == "shell":
            return Raw([r.choice(["date +%s\n", "date -u\n", "stat -c %Y app.log\n"]), lab])
        return Raw([r.choice(["next run scheduled at ", "token expires at ", "last heartbeat "]), lab])
    keys = [("created", "at"), ("updated", "at"), ("expires", "at"), ("timestamp",), ("last", "seen"), ("not", "after")]
    return KV(r.choice(keys), [lab], raw=ts.isdigit() and ctx.fmt == "json")


def q_version(r: R, ctx: Ctx) -> Item:
    lab = N(n_version(r), "version")
    if ctx.fmt == "shell" and r.random() < 0.5:
        return Raw(
            [
                r.choice(["node --version", "helm version --short", "terraform version", "kubectl version --client"]),
                "\n",
                lab,
            ]
        )
    if ctx.fmt in ("log", "stacktrace") and r.random() < 0.5:
        return Raw([f"starting {a_service(r)} version ", lab])
    keys = [("version",), ("app", "version"), ("chart", "version"), ("min", "version"), ("engine", "version")]
    return KV(r.choice([*keys, ("release",), ("app", "version")]), [lab])


def q_image(r: R, ctx: Ctx) -> Item:
    uri = ctx.fmt != "json" or r.random() < 0.4
    lab = N(n_base64_image(r, uri), "base64_image")
    if ctx.fmt == "log":
        return Raw(["rendered chart preview ", lab])
    if ctx.fmt == "code":
        return KV(("logo", "data", "uri"), [lab])
    return KV(r.choice([("data",), ("thumbnail",), ("avatar",), ("icon",), ("image",)]), [lab])


def q_placeholder(r: R, ctx: Ctx) -> Item:
    key = r.choice(PASSWORD_KEYS)
    lab = N(n_placeholder(r, key_text(key, "upper")), "placeholder")
    if ctx.fmt == "shell" and lab.text.startswith("$") and r.random() < 0.5:
        return Raw([f'{r.choice(["psql", "mysql", "redis-cli"])} --password="', lab, '"'])
    return KV(key, [lab])


def q_env_ref(r: R, ctx: Ctx) -> Item:
    key = r.choice(PASSWORD_KEYS)
    name = key_text(key, "upper")
    if ctx.fmt == "shell":
        return Raw([f"export {name}=", '"', N(f"$(cat /run/secrets/{key_text(key, 'snake')})", "env_reference"), '"'])
    expr = {
        "python": r.choice([f'os.environ["{name}"]', f'os.getenv("{name}")', f'os.environ.get("{name}", "")']),
        "js": r.choice([f"process.env.{name}", f'process.env["{name}"]']),
        "go": f'os.Getenv("{name}")',
        "java": f'System.getenv("{name}")',
    }.get(ctx.lang, f"${{{name}}}")
    return KV(key, [N(expr, "env_reference")], raw=ctx.lang != "properties")


def q_bad_iban(r: R, ctx: Ctx) -> Item:
    lab = N(n_bad_iban(r), "iban_bad_checksum")
    if ctx.fmt in ("log", "stacktrace") and r.random() < 0.5:
        return Raw(["rejected payout account ", lab, ": checksum mismatch"])
    return KV(r.choice([("iban",), ("payout", "iban"), ("test", "iban"), ("bank", "account", "iban")]), [lab])


def q_bad_ssn(r: R, ctx: Ctx) -> Item:
    lab = N(n_bad_ssn(r), "ssn_invalid")
    if ctx.fmt in ("log", "stacktrace") and r.random() < 0.5:
        return Raw(["identity check failed: ssn ", lab, " is not a valid issued number"])
    return KV(r.choice([("ssn",), ("social", "security", "number"), ("test", "ssn")]), [lab])


def q_date(r: R, ctx: Ctx) -> Item:
    t = a_time(r) - timedelta(days=r.randint(0, 365 * 50))
    keys = [
        ("dob",),
        ("date", "of", "birth"),
        ("hire", "date"),
        ("start", "date"),
        ("valid", "until"),
        ("ssn", "verified", "on"),
    ]
    return KV(r.choice(keys), [N(f"{t:%Y-%m-%d}", "date")])


PASSWORD_WORD_PAIRS: tuple[tuple[Key, Callable[[R], str]], ...] = (
    (("max", "tokens"), lambda r: str(r.choice([256, 1024, 4096, 8192]))),
    (("max", "completion", "tokens"), lambda r: str(r.choice([512, 2048, 16384]))),
    (("token", "count"), lambda r: str(r.randint(10, 20000))),
    (("password", "min", "length"), lambda r: str(r.randint(8, 16))),
    (("password", "max", "age", "days"), lambda r: str(r.choice([30, 90, 180]))),
    (
        ("secret", "name"),
        lambda r: r.choice(["db-credentials", "api-token", "stripe-keys", "tls-cert", "registry-auth"]),
    ),
    (("password", "policy"), lambda r: r.choice(["strict", "default", "nist-800-63b"])),
    (("token", "type"), lambda r: r.choice(["bearer", "Bearer", "access_token", "mac"])),
    (("tokenizer",), lambda r: r.choice(["cl100k_base", "o200k_base", "bert-base-uncased"])),
    (("token", "uri"), lambda r: "https://oauth2.googleapis.com/token"),
    (("token", "endpoint"), lambda r: f"https://auth.{r.choice(COMPANY_DOMAINS)}/oauth/token"),
    (("password", "reset", "ttl"), lambda r: r.choice(["15m", "1h", "24h"])),
    (("secret", "store"), lambda r: r.choice(["vault", "aws-secretsmanager", "gcp-secret-manager"])),
    (("api", "key", "header"), lambda r: r.choice(["X-API-Key", "Authorization"])),
    (("passwd", "file"), lambda r: "/etc/passwd"),
    (("password", "required"), lambda r: r.choice(["true", "false"])),
    (("access", "token", "lifetime"), lambda r: r.choice(["3600", "900", "1h"])),
    (("refresh", "token", "rotation"), lambda r: r.choice(["enabled", "disabled"])),
    (("token", "ttl"), lambda r: r.choice(["24h", "30m", "7d"])),
    (("secret", "backend"), lambda r: r.choice(["kubernetes", "vault", "sops"])),
    (("password", "strength"), lambda r: r.choice(["medium", "strong"])),
    (("auth", "method"), lambda r: r.choice(["password", "oauth2", "token"])),
    (("secret", "key", "ref"), lambda r: r.choice(["api-token", "db-credentials"])),
    (("password", "hasher"), lambda r: r.choice(["argon2", "bcrypt_sha256", "pbkdf2_sha256"])),
)


def q_password_word(r: R, ctx: Ctx) -> Item:
    key, gen = r.choice(PASSWORD_WORD_PAIRS)
    val = gen(r)
    return KV(key, [N(val, "password_word_key")], raw=val.isdigit() and ctx.fmt in TREE_FMTS)


KEY_NAME_PAIRS: tuple[tuple[Key, Callable[[R], str]], ...] = (
    (("cache", "key"), lambda r: f"user:{r.randint(1, 99999)}:{r.choice(['profile', 'cart', 'prefs'])}"),
    (("partition", "key"), lambda r: r.choice(["tenant_id", "customer_id", "region"])),
    (("sort", "key"), lambda r: r.choice(["created_at", "updated_at", "sk"])),
    (("routing", "key"), lambda r: f"{r.choice(SERVICES)}.{r.choice(['created', 'updated', 'deleted'])}"),
    (("primary", "key"), lambda r: r.choice(["id", "order_id", "uuid"])),
    (("foreign", "key"), lambda r: r.choice(["customer_id", "account_id"])),
    (("s3", "key"), lambda r: f"uploads/{r.randint(2022, 2026)}/{r.randint(1, 12):02d}/report-{r.randint(1, 999)}.pdf"),
    (("object", "key"), lambda r: f"backups/{r.choice(SERVICES)}/dump-{r.randint(1, 31):02d}.sql.gz"),
    (("hash", "key"), lambda r: "pk"),
    (("dedupe", "key"), lambda r: f"order-{r.randint(10000, 99999)}-v{r.randint(1, 3)}"),
    (("label", "key"), lambda r: r.choice(["app.kubernetes.io/name", "team", "tier"])),
    (("sort", "key"), lambda r: f"ORDER#{r.randint(1000, 9999)}"),
    (("group", "key"), lambda r: r.choice(["region", "plan"])),
    (("key", "file"), lambda r: r.choice(["/etc/ssl/private/tls.key", "certs/server-key.pem"])),
    (
        ("key", "id"),
        lambda r: r.choice(["alias/app-prod", "projects/acme/locations/global/keyRings/app/cryptoKeys/db"]),
    ),
)


def q_key_name(r: R, ctx: Ctx) -> Item:
    key, gen = r.choice(KEY_NAME_PAIRS)
    return KV(key, [N(gen(r), "key_name_non_secret")])


def q_stripe_pk(r: R, ctx: Ctx) -> Item:
    pk = N(r.choice(["pk_live_", "pk_live_", "pk_test_"]) + rs(r, ALNUM, r.choice([24, 99])), "stripe_publishable_key")
    return KV(r.choice([("stripe", "publishable", "key"), ("publishable", "key"), ("stripe", "pk")]), [pk])


def q_hex(r: R, ctx: Ctx) -> Item:
    keys = [
        ("color",),
        ("primary", "color"),
        ("background",),
        ("theme", "color"),
        ("accent", "colour"),
        ("border", "color"),
    ]
    return KV(r.choice(keys), [N(n_hex_colour(r), "hex_colour")])


def q_resource_version(r: R, ctx: Ctx) -> Item:
    return KV("resourceVersion", [N(str(r.randint(10_000, 999_999_999)), "k8s_resource_version")])


def q_docker_digest(r: R, ctx: Ctx) -> Item:
    img = r.choice(["nginx", "redis", "postgres", "python", "node", f"ghcr.io/acme/{a_service(r)}", "busybox"])
    tag = r.choice(["1.27", "7.2-alpine", "16", "3.12-slim", "20-bookworm", "latest"])
    dig = N(n_sha256(r), "docker_digest")
    if ctx.fmt == "shell" and r.random() < 0.6:
        layers = "".join(f"\n{rs(r, HEX, 12)}: Pull complete" for _ in range(r.randint(1, 4)))
        return Raw(
            [
                f"docker pull {img}:{tag}\n{tag}: Pulling from {img}{layers}\nDigest: ",
                dig,
                f"\nStatus: Downloaded newer image for {img}:{tag}",
            ]
        )
    if ctx.fmt in ("log", "stacktrace"):
        return Raw([f"pulled image {img}@", dig])
    if r.random() < 0.6:
        return KV(("image",), [f"{img}@", dig])
    return KV(r.choice([("digest",), ("image", "digest")]), [dig])


def q_port(r: R, ctx: Ctx) -> Item:
    p = r.choice([80, 443, 3000, 5432, 6379, 8080, 8443, 9090, 27017, 5672, 9200])
    if ctx.fmt == "shell" and r.random() < 0.5:
        return Raw(
            [
                "docker run -d -p ",
                N(f"{r.choice([p, 8080, 18080])}:{p}", "port"),
                f" --name {a_service(r)} {a_service(r)}:latest",
            ]
        )
    keys = [("port",), ("listen", "port"), ("container", "port"), ("redis", "port"), ("metrics", "port")]
    return KV(r.choice(keys), [N(str(p), "port")], raw=ctx.fmt in TREE_FMTS)


def q_duration(r: R, ctx: Ctx) -> Item:
    keys = [
        ("timeout",),
        ("ttl",),
        ("retry", "backoff"),
        ("interval",),
        ("max", "age"),
        ("grace", "period"),
        ("session", "timeout"),
    ]
    d = n_duration(r)
    return KV(r.choice(keys), [N(d, "duration")], raw=d.isdigit() and ctx.fmt in TREE_FMTS)


def q_path(r: R, ctx: Ctx) -> Item:
    lab = N(n_path(r), "path")
    if ctx.fmt in ("log", "stacktrace") and r.random() < 0.4:
        return Raw([r.choice(["reading ", "loaded credentials file ", "watching "]), lab])
    keys = [
        ("path",),
        ("config", "file"),
        ("cert", "file"),
        ("password", "file"),
        ("token", "path"),
        ("credentials", "file"),
    ]
    return KV(r.choice([*keys, ("secrets", "dir"), ("db", "password", "file")]), [lab])


def q_url(r: R, ctx: Ctx) -> Item:
    lab = N(n_url(r), "url_no_credentials")
    if ctx.fmt in ("log", "stacktrace") and r.random() < 0.5:
        return Raw([r.choice(["connecting to ", "fetching ", "cloning "]), lab])
    if ctx.fmt == "shell" and r.random() < 0.5:
        return Raw(["git clone ", lab] if "git" in lab.text else ["curl -s ", lab])
    if "git" in lab.text:
        keys: list[Key] = [("repository",), ("source", "repo"), ("git", "remote")]
    elif lab.text.startswith("http"):
        keys = [("url",), ("homepage",), ("endpoint",), ("docs", "url")]
    else:
        keys = [("database", "url"), ("dsn",), ("broker", "url"), ("redis", "url"), ("url",)]
    return KV(r.choice(keys), [lab])


def q_npm_spec(r: R, ctx: Ctx) -> Item:
    if ctx.fmt == "shell":
        specs = [N(n_npm_spec(r).replace("^", "").replace("~", ""), "npm_package_spec") for _ in range(r.randint(1, 3))]
        cmd: list[Seg] = ["npm install --save-dev"]
        for s in specs:
            cmd += [" ", s]
        return Raw(
            [
                *cmd,
                f"\n\nadded {r.randint(1, 90)} packages, and audited {r.randint(100, 900)} packages"
                f" in {r.randint(1, 9)}s",
            ]
        )
    spec = N(n_npm_spec(r).replace("^", "").replace("~", ""), "npm_package_spec")
    if ctx.fmt in ("log", "stacktrace"):
        return Raw(["npm warn deprecated ", spec, ": This module is not supported, and leaks memory."])
    return KV(r.choice([("from",), ("requested",), ("package",)]), [spec])


def q_pem_public(r: R, ctx: Ctx) -> Item:
    pem = N(n_pem_public(r), "pem_public")
    if ctx.fmt == "shell":
        return Raw([r.choice(["cat certs/ca.pem\n", "openssl x509 -in tls.crt\n", "cat id_rsa.pub.pem\n"]), pem])
    keys: list[Key] = [("ca", "cert"), ("certificate",), ("public", "key"), ("tls", "crt")]
    if ctx.fmt == "yaml":
        keys += ["ca.crt", "tls.crt"]
    return KV(r.choice(keys), [pem])


NEG_FACTORIES: dict[str, Callable[[R, Ctx], Item]] = {
    "uuid": q_uuid,
    "git_sha": q_git_sha,
    "git_sha_short": q_git_short,
    "npm_integrity": q_integrity,
    "sha256_digest": q_sha256,
    "pip_hash": q_pip_hash,
    "go_sum_hash": q_go_sum,
    "luhn_invalid_number": q_luhn,
    "timestamp": q_timestamp,
    "version": q_version,
    "base64_image": q_image,
    "placeholder": q_placeholder,
    "env_reference": q_env_ref,
    "iban_bad_checksum": q_bad_iban,
    "ssn_invalid": q_bad_ssn,
    "date": q_date,
    "password_word_key": q_password_word,
    "key_name_non_secret": q_key_name,
    "stripe_publishable_key": q_stripe_pk,
    "hex_colour": q_hex,
    "k8s_resource_version": q_resource_version,
    "docker_digest": q_docker_digest,
    "port": q_port,
    "duration": q_duration,
    "path": q_path,
    "url_no_credentials": q_url,
    "npm_package_spec": q_npm_spec,
    "pem_public": q_pem_public,
}
NEG_LINE = frozenset({"env", "log", "shell", "code", "stacktrace"})
NEG_KV = NEG_LINE | TREE_FMTS
NEG_FMTS: dict[str, frozenset[str]] = {
    "uuid": NEG_KV,
    "git_sha": NEG_KV,
    "git_sha_short": NEG_KV,
    "npm_integrity": frozenset({"json", "yaml", "shell"}),
    "sha256_digest": NEG_KV,
    "pip_hash": frozenset({"shell"}),
    "go_sum_hash": frozenset({"shell"}),
    "luhn_invalid_number": NEG_KV,
    "timestamp": NEG_KV,
    "version": NEG_KV,
    "base64_image": frozenset({"json", "yaml", "code", "log"}),
    "placeholder": NEG_KV - {"stacktrace"},
    "env_reference": frozenset({"code", "shell"}),
    "iban_bad_checksum": NEG_KV - {"code", "shell"},
    "ssn_invalid": NEG_KV - {"code", "shell", "env"},
    "date": NEG_KV - {"shell"},
    "password_word_key": NEG_KV - {"stacktrace"},
    "key_name_non_secret": NEG_KV - {"stacktrace"},
    "stripe_publishable_key": NEG_KV - {"stacktrace"},
    "hex_colour": frozenset({"json", "yaml", "code", "env"}),
    "k8s_resource_version": TREE_FMTS,
    "docker_digest": NEG_KV - {"code"},
    "port": NEG_KV - {"stacktrace"},
    "duration": NEG_KV - {"stacktrace"},
    "path": NEG_KV,
    "url_no_credentials": NEG_KV,
    "npm_package_spec": frozenset({"shell", "log", "json"}),
    "pem_public": frozenset({"yaml", "json", "env", "shell", "code"}),
}


def neg_ok(kind: str, ctx: Ctx) -> bool:
    if ctx.fmt not in NEG_FMTS[kind]:
        return False
    if kind == "k8s_resource_version" and ctx.tmpl not in ("k8s", "secret", "configmap", "deployment"):
        return False
    if ctx.fmt == "code" and ctx.lang in ("properties",) and kind in ("pem_public", "base64_image"):
        return False
    if kind == "env_reference" and ctx.fmt == "code" and ctx.lang == "properties":
        return True
    return not (ctx.fmt == "json" and ctx.tmpl == "mcp" and kind in ("pem_public", "k8s_resource_version"))


# --------------------------------------------------------------------------------------------------------------------
# Clean filler shared by the formats

CFG_FILLERS: tuple[tuple[tuple[str, ...], Callable[[R], object]], ...] = (
    (("log", "level"), lambda r: r.choice(["info", "debug", "warn", "error"])),
    (("environment",), lambda r: r.choice(["production", "staging", "development"])),
    (("region",), lambda r: r.choice(REGIONS)),
    (("host",), lambda r: r.choice(HOSTS)),
    (("http", "port"), lambda r: r.choice([3000, 8000, 8080, 9000])),
    (("max", "connections"), lambda r: r.choice([10, 20, 50, 100, 200])),
    (("pool", "size"), lambda r: r.randint(2, 40)),
    (("debug",), lambda r: r.random() < 0.3),
    (("bucket",), lambda r: f"{r.choice(['acme', 'globex', 'initech'])}-{r.choice(['prod', 'staging'])}-assets"),
    (("queue", "name"), lambda r: f"{r.choice(SERVICES)}.{r.choice(['created', 'events', 'dlq'])}"),
    (("workers",), lambda r: r.randint(1, 16)),
    (("cache", "ttl", "seconds"), lambda r: r.choice([60, 300, 3600])),
    (("service", "name"), a_service),
    (("database", "name"), lambda r: f"{r.choice(SERVICES)}_{r.choice(['prod', 'db', 'main'])}"),
    (("database", "user"), lambda r: r.choice(["app", "readonly", "etl", "billing"])),
    (
        ("smtp", "host"),
        lambda r: r.choice(["smtp.mailgun.org", "smtp.sendgrid.net", "email-smtp.eu-west-1.amazonaws.com"]),
    ),
    (("retry", "attempts"), lambda r: r.randint(1, 8)),
    (("enable", "metrics"), lambda r: r.random() < 0.7),
    (("tz",), lambda r: r.choice(["UTC", "Europe/Berlin", "America/New_York"])),
    (("locale",), lambda r: r.choice(["en_US", "de_DE", "fr_FR"])),
    (("upload", "dir"), lambda r: f"/var/lib/{r.choice(SERVICES)}/uploads"),
    (("base", "url"), lambda r: f"https://{r.choice(['api', 'app', 'www'])}.{r.choice(COMPANY_DOMAINS)}"),
    (("rate", "limit"), lambda r: f"{r.choice([10, 100, 1000])}/{r.choice(['s', 'min', 'h'])}"),
    (("batch", "size"), lambda r: r.choice([50, 100, 500, 1000])),
    (("replicas",), lambda r: r.randint(1, 6)),
    (("feature", "new", "checkout"), lambda r: r.random() < 0.5),
    (("metrics", "path"), lambda r: "/metrics"),
    (("otel", "service", "name"), a_service),
    (("default", "currency"), lambda r: r.choice(["EUR", "USD", "GBP"])),
    (("page", "size"), lambda r: r.choice([20, 25, 50])),
    (("compression",), lambda r: r.choice(["gzip", "zstd", "none"])),
    (("read", "only"), lambda r: r.random() < 0.2),
    (("allowed", "origins"), lambda r: f"https://app.{r.choice(COMPANY_DOMAINS)}"),
)


def cfg_pair(r: R, used: set[str] | None = None) -> tuple[tuple[str, ...], object]:
    """A harmless config key/value; with ``used``, a key not used yet in this document (qualified if need be)."""
    words, gen = r.choice(CFG_FILLERS)
    if used is not None:
        for _ in range(10):
            if "_".join(words) not in used:
                break
            words, gen = r.choice(CFG_FILLERS)
        while "_".join(words) in used:
            words = (r.choice(QUALIFIERS + tuple(SERVICES)), *words)
        used.add("_".join(words))
    return words, gen(r)


def scalar_text(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


LOG_MSGS: tuple[Callable[[R], str], ...] = (
    lambda r: (
        f"{r.choice(['GET', 'POST', 'PUT', 'DELETE'])} {a_path(r)} "
        f"{r.choice([200, 200, 201, 204, 404, 422, 500])} {r.randint(1, 900)}ms"
    ),
    lambda r: (
        f"processed {r.randint(1, 500)} messages from queue {r.choice(SERVICES)}.events in {r.randint(3, 9000)}ms"
    ),
    lambda r: f"worker {r.randint(1, 16)} started (pid {r.randint(100, 40000)})",
    lambda r: f"retrying request attempt={r.randint(1, 5)} backoff={r.choice([100, 250, 500, 1000])}ms",
    lambda r: (
        f"scheduled job {r.choice(['nightly-export', 'reindex', 'cleanup-sessions', 'sync-invoices'])} "
        "finished status=ok"
    ),
    lambda r: f"connected to database host={r.choice(HOSTS)} pool_size={r.randint(2, 40)}",
    lambda r: f"health check ok latency={r.randint(1, 90)}ms",
    lambda r: f"user {a_user(r)} logged in via sso",
    lambda r: (
        f"uploaded {r.choice(['report', 'invoice', 'export'])}-{r.randint(1, 9999)}.pdf ({r.randint(2, 900)} KB)"
        " to bucket acme-prod-assets"
    ),
    lambda r: f"deprecated config option {r.choice(['server.legacy_mode', 'cache.v1', 'auth.basic'])} is ignored",
    lambda r: f"rate limit reached for tenant {r.choice(LAST)}-{r.randint(1, 99)}, throttling for {r.randint(1, 60)}s",
    lambda r: f"GC pause {r.randint(1, 300)}ms heap={r.randint(64, 4096)}MB",
    lambda r: f"migration {r.randint(1, 300):04d}_{r.choice(['add_index', 'create_orders', 'drop_legacy'])} applied",
    lambda r: "shutting down gracefully",
    lambda r: (
        f"feature flag {r.choice(['new-checkout', 'dark-mode', 'search-v2'])} "
        f"evaluated to {r.choice(['true', 'false'])}"
    ),
    lambda r: f"cache hit ratio {r.randint(40, 99)}% over last {r.choice([1, 5, 15])}m",
    lambda r: f"order {r.randint(1000, 99999)} moved to state {r.choice(['paid', 'shipped', 'refunded', 'cancelled'])}",
    lambda r: (
        f"slow query took {r.randint(500, 9000)}ms: "
        f"SELECT * FROM {r.choice(['orders', 'invoices', 'events'])} WHERE status = $1"
    ),
    lambda r: f"listening on :{r.choice([3000, 8080, 9090])}",
    lambda r: f"received SIGTERM, draining {r.randint(0, 40)} connections",
)
LOGGERS = ("app.db", "app.http", "worker", "scheduler", "billing.sync", "auth", "uvicorn.access", "celery", "kafka")


def log_prefix(r: R, style: str, t: datetime, level: str) -> str:
    ms = t.microsecond // 1000
    if style == "iso":
        return f"{t:%Y-%m-%dT%H:%M:%S}.{ms:03d}Z {level:<5} [{r.choice(LOGGERS)}] "
    if style == "py":
        return f"{t:%Y-%m-%d %H:%M:%S},{ms:03d} - {r.choice(LOGGERS)} - {level} - "
    if style == "laravel":
        return f"[{t:%Y-%m-%d %H:%M:%S}] production.{level}: "
    if style == "klog":
        src = f"{r.choice(['controller', 'reconciler', 'server', 'client'])}.go:{r.randint(20, 900)}"
        return f"{level[0]}{t:%m%d %H:%M:%S}.{t.microsecond:06d}       1 {src}] "
    host = f"{r.choice(['web', 'api', 'worker'])}-{r.randint(1, 9)}"
    return f"{t:%b %d %H:%M:%S} {host} {r.choice(SERVICES)}[{r.randint(100, 40000)}]: "


ENV_SAFE = re.compile(r"[A-Za-z0-9_\-./+=:@%,]+")


def quoted(r: R, val: list[Seg], safe: bool, plain_ok: float = 0.5) -> list[Seg]:
    q = "" if safe and r.random() < plain_ok else _q(r)
    return [q, *val, q]


def log_kv(r: R, kv: KV) -> list[Seg]:
    k = key_text(kv.key, r.choice(["snake", "snake", "upper", "camel"]))
    t = plain(kv.val)
    msg = r.choice(["loaded config", "env", "settings override", "initialising client with", "DEBUG dump:", "using"])
    form = r.randrange(4)
    if form == 0 and ENV_SAFE.fullmatch(t):
        return [f"{msg} {k}=", *kv.val]
    if form in (0, 1):
        return [f'{msg} {k}="', *kv.val, '"']
    if form == 2:
        return [f"{msg} {{'{k}': '", *kv.val, f"', 'timeout': {r.randint(1, 60)}}}"]
    return [f"{msg}: {k}: ", *kv.val]


def b_log(r: R, ctx: Ctx, items: list[Item], target: int) -> list[Seg]:
    style = ctx.lang
    entries: list[tuple[str, list[Seg] | KV]] = []
    size = 0
    while size < target or not entries:
        msg = r.choice(LOG_MSGS)(r)
        entries.append(("msg", [msg]))
        size += len(msg) + 40
    for it in items:
        entries.insert(
            r.randint(0, len(entries)), ("kv", it) if isinstance(it, KV) else ("whole" if it.whole else "msg", it.segs)
        )
    t = a_time(r)
    lines: list[list[Seg]] = []
    for what, body in entries:
        t += timedelta(milliseconds=r.randint(1, 4000))
        level = r.choice(LEVELS) if what != "kv" else r.choice(["DEBUG", "INFO"])
        if what == "whole":
            assert isinstance(body, list)
            lines.append(body)
        elif style == "json":
            ts = f"{t:%Y-%m-%dT%H:%M:%S}.{t.microsecond // 1000:03d}Z"
            head = f'{{"ts":"{ts}","level":"{level.lower()}","logger":"{r.choice(LOGGERS)}",'
            if isinstance(body, KV):
                k = key_text(body.key, r.choice(["snake", "camel", "upper"]))
                lines.append([head, f'"msg":"config loaded","{k}":"', *mapseg(body.val, _jesc), '"}'])
            else:
                lines.append([head, '"msg":"', *mapseg(body, _jesc), '"}'])
        else:
            segs = log_kv(r, body) if isinstance(body, KV) else body
            lines.append([log_prefix(r, style, t, level), *segs])
    return [*join(lines), "\n"]


def env_line(r: R, kv: KV, export: bool) -> list[Seg]:
    k = ("export " if export else "") + key_text(kv.key, "upper")
    t = plain(kv.val)
    if "\n" in t:
        if r.random() < 0.5:
            return [k, '="', *kv.val, '"']
        return [k, '="', *mapseg(kv.val, lambda s: s.replace("\n", "\\n")), '"']
    return [k, "=", *quoted(r, kv.val, bool(ENV_SAFE.fullmatch(t)) or kv.raw, 0.6)]


ENV_COMMENTS = (
    "# --- database ---",
    "# --- cache ---",
    "# third-party integrations",
    "# feature flags",
    "# observability",
    "# see docs/configuration.md",
)


def b_env(r: R, ctx: Ctx, items: list[Item], target: int) -> list[Seg]:
    export = r.random() < 0.2
    units: list[list[Seg]] = []
    used: set[str] = set()
    size = 0
    while size < target or not units:
        x = r.random()
        if x < 0.06:
            units.append([r.choice(ENV_COMMENTS)])
        elif x < 0.12:
            units.append([""])
        else:
            words, v = cfg_pair(r, used)
            units.append([("export " if export else "") + key_text(words, "upper") + "=" + scalar_text(v)])
        size += seglen(units[-1]) + 1
    for it in items:
        assert isinstance(it, KV), it
        units.insert(r.randint(0, len(units)), env_line(r, it, export))
    if r.random() < 0.5:
        units.insert(
            0, [r.choice(["# .env.production", f"# {a_service(r)} settings", "# generated by ./scripts/bootstrap.sh"])]
        )
    while units and units[0] == [""]:
        units.pop(0)
    return [*join(units), "\n"]


SHELL_CMDS: tuple[Callable[[R], str], ...] = (
    lambda r: f"cd ~/src/{a_service(r)}",
    lambda r: "git status",
    lambda r: "git pull --rebase origin main",
    lambda r: f"git checkout -b feature/{r.choice(WORDS)}-{r.randint(1, 999)}",
    lambda r: f"kubectl get pods -n {r.choice(['prod', 'staging', 'default'])}",
    lambda r: f"kubectl logs deploy/{a_service(r)} -n prod --tail=100",
    lambda r: f"kubectl rollout status deploy/{a_service(r)} -n prod",
    lambda r: "docker ps",
    lambda r: f"docker compose up -d {r.choice(SERVICES)}",
    lambda r: "make test",
    lambda r: "npm run build",
    lambda r: "terraform plan -out tfplan",
    lambda r: "ls -la",
    lambda r: "vim config/settings.yaml",
    lambda r: 'grep -rn "TODO" src/ | wc -l',
    lambda r: f"tail -f /var/log/{r.choice(SERVICES)}/app.log",
    lambda r: f"ssh bastion-{r.randint(1, 4)}",
    lambda r: "python -m pytest -q tests/unit",
    lambda r: "go test ./...",
    lambda r: "history | tail -20",
    lambda r: f"helm upgrade --install {r.choice(SERVICES)} ./chart -n prod",
    lambda r: "df -h",
    lambda r: "cat README.md | head",
)
SHELL_OUTPUTS: dict[str, Callable[[R], str]] = {
    "git status": lambda r: (
        "On branch main\nYour branch is up to date with 'origin/main'.\n\nnothing to commit, working tree clean"
    ),
    "docker ps": lambda r: (
        "CONTAINER ID   IMAGE          COMMAND                  STATUS         PORTS                    NAMES\n"
        + f'{rs(r, HEX, 12)}   postgres:16    "docker-entrypoint.s..."   Up 3 hours     5432/tcp                 db-1'
    ),
    "make test": lambda r: (
        "pytest -q\n........................................ [100%]\n"
        f"{r.randint(40, 900)} passed in {r.randint(1, 90)}.{r.randint(10, 99)}s"
    ),
    "df -h": lambda r: (
        "Filesystem      Size  Used Avail Use% Mounted on\n"
        f"/dev/nvme0n1p1  100G   {r.randint(10, 90)}G   {r.randint(10, 90)}G  {r.randint(10, 90)}% /"
    ),
    "go test ./...": lambda r: f"ok  \tgithub.com/acme/{r.choice(SERVICES)}/internal/api\t0.{r.randint(100, 999)}s",
}


def shell_kv(r: R, kv: KV) -> list[Seg]:
    k = key_text(kv.key, "upper")
    t = plain(kv.val)
    if "\n" in t:
        return [f'export {k}="', *kv.val, '"']
    val = quoted(r, kv.val, bool(ENV_SAFE.fullmatch(t)), 0.5)
    form = r.randrange(6)
    if form == 0:
        return [f"export {k}=", *val]
    if form == 1:
        return [f"{k}=", *val, f" ./scripts/{r.choice(['migrate', 'deploy', 'seed', 'backfill'])}.sh"]
    if form == 2:
        return [f"docker run --rm -e {k}=", *val, f" ghcr.io/acme/{a_service(r)}:latest"]
    if form == 3:
        return [f"heroku config:set {k}=", *val, f" -a {a_service(r)}"]
    if form == 4:
        snake = key_text(kv.key, "snake")
        return [f"kubectl create secret generic {a_service(r)}-env --from-literal={snake}=", *val]
    return ['echo "', f"{k}=", *kv.val, '" >> .env'] if '"' not in t else [f"export {k}=", *val]


def b_shell(r: R, ctx: Ctx, items: list[Item], target: int) -> list[Seg]:
    cmds: list[list[Seg]] = []
    size = 0
    multiline = any(isinstance(it, Raw) and "\n" in plain(it.segs) for it in items)
    style = "prompt" if multiline and ctx.lang == "history" else ctx.lang
    while size < target or not cmds:
        c = r.choice(SHELL_CMDS)(r)
        if style != "history" and c in SHELL_OUTPUTS and r.random() < 0.6:
            c += "\n" + SHELL_OUTPUTS[c](r)
        cmds.append([c])
        size += len(c) + 8
    for it in items:
        cmds.insert(r.randint(0, len(cmds)), shell_kv(r, it) if isinstance(it, KV) else it.segs)
    out: list[list[Seg]] = []
    n = r.randint(100, 1900)
    prompt = r.choice(["$ ", "$ ", f"{r.choice(FIRST)}@{r.choice(['laptop', 'web-3', 'devbox'])}:~/src$ ", "+ "])
    for i, cmd in enumerate(cmds):
        if style == "history":
            out.append([f"{n + i:>5}  ", *cmd])
        else:
            out.append([prompt, *cmd])
    return [*join(out), "\n"]


def code_val(r: R, lang: str, kv: KV) -> list[Seg]:
    if kv.raw:
        return list(kv.val)
    t = plain(kv.val)
    if "\n" in t:
        if lang == "python":
            return ['"""', *kv.val, '\n"""']
        if lang == "java":
            return ['"""\n', *kv.val, '\n"""']
        return ["`", *kv.val, "`"]
    q = '"' if lang in ("go", "java") else _q(r)
    return [q, *kv.val, q]


def lit(v: object, lang: str) -> str:
    if isinstance(v, bool):
        return ("True" if v else "False") if lang == "python" else ("true" if v else "false")
    if isinstance(v, int):
        return str(v)
    return json.dumps(str(v))


def b_code(r: R, ctx: Ctx, items: list[Item], target: int) -> list[Seg]:
    lang = ctx.lang
    svc = a_service(r)
    consts: list[list[Seg]] = []
    entries: list[list[Seg]] = []  # dict / object / struct entries
    headers: list[list[Seg]] = []  # Go: literal-key entries go to a map

    used: set[str] = set()

    def filler(block: list[list[Seg]], as_entry: bool) -> None:
        words, v = cfg_pair(r, used)
        if lang == "python":
            block.append(
                [
                    f'    "{key_text(words, "snake")}": {lit(v, lang)},'
                    if as_entry
                    else f"{key_text(words, 'upper')} = {lit(v, lang)}"
                ]
            )
        elif lang == "js":
            block.append(
                [
                    f"  {key_text(words, 'camel')}: {lit(v, lang)},"
                    if as_entry
                    else f"const {key_text(words, 'upper')} = {lit(v, lang)};"
                ]
            )
        elif lang == "go":
            block.append(
                [
                    f"\t{key_text(words, 'pascal')}: {lit(v, lang)},"
                    if as_entry
                    else f"\t{key_text(words, 'pascal')} = {lit(v, lang)}"
                ]
            )
        elif lang == "java":
            jt = "boolean" if isinstance(v, bool) else "int" if isinstance(v, int) else "String"
            block.append([f"    public static final {jt} {key_text(words, 'upper')} = {lit(v, lang)};"])
        else:
            block.append([f"{svc.split('-')[0]}.{key_text(words, 'kebab')}={scalar_text(v)}"])

    size = 0
    while size < target or not consts:
        as_entry = lang in ("python", "js", "go") and r.random() < 0.4
        filler(entries if as_entry else consts, as_entry)
        size += seglen((entries if as_entry else consts)[-1]) + 1
    for it in items:
        assert isinstance(it, KV), it
        lit_key = isinstance(it.key, str)
        val = code_val(r, lang, it)
        to_entry = lang in ("python", "js", "go") and (lit_key or r.random() < 0.4)
        if lang == "python":
            line = (
                [f'    "{key_text(it.key, "snake")}": ', *val, ","]
                if to_entry
                else [f"{key_text(it.key, r.choice(['upper', 'snake']))} = ", *val]
            )
        elif lang == "js":
            k = json.dumps(it.key) if lit_key else key_text(it.key, "camel")
            line = (
                [f"  {k}: ", *val, ","]
                if to_entry
                else [f"const {key_text(it.key, r.choice(['camel', 'upper']))} = ", *val, ";"]
            )
        elif lang == "go":
            if lit_key:
                headers.append([f"\t{json.dumps(it.key)}: ", *val, ","])
                continue
            k = key_text(it.key, "pascal")
            line = (
                [f"\t{k}: ", *val, ","]
                if to_entry
                else [f"\t{key_text(it.key, r.choice(['camel', 'pascal']))} = ", *val]
            )
        elif lang == "java":
            if lit_key:
                line = [f'    static {{ DEFAULT_HEADERS.put("{it.key}", ', *val, "); }"]
            else:
                k = key_text(it.key, r.choice(["upper", "upper", "camel"]))
                line = [f"    {'public static final' if k.isupper() else 'private'} String {k} = ", *val, ";"]
        else:
            prop = (
                key_text(it.key, "")
                if lit_key
                else f"{svc.split('-')[0]}.{key_text(it.key, r.choice(['kebab', 'dot']))}"
            )
            line = [f"{prop}{r.choice(['=', ' = ', ': '])}", *val]
        block = entries if to_entry else consts
        block.insert(r.randint(0, len(block)), line)
    if lang == "python":
        head = [[f'"""Settings for the {svc} service."""'], [""], ["import os"], ["from pathlib import Path"], [""]]
        body = [*consts, [""], ["CONFIG = {"], *entries, ["}"]] if entries else consts
    elif lang == "js":
        head = [[f"// config/{r.choice(['production', 'staging', 'default'])}.js"], ["'use strict';"], [""]]
        body = [*consts, [""], ["module.exports = {"], *entries, ["};"]]
    elif lang == "go":
        head = [["package config"], [""], ['import "time"'], [""], ["const ("]]
        body = [*consts, [")"], [""], ["var Default = Config{"], *entries, ["}"]]
        if headers:
            body += [[""], ["var DefaultHeaders = map[string]string{"], *headers, ["}"]]
    elif lang == "java":
        pkg = svc.split("-")[0]
        head = [
            [f"package com.acme.{pkg}.config;"],
            [""],
            ["import java.util.HashMap;"],
            ["import java.util.Map;"],
            [""],
        ]
        head += [
            ["public final class AppConfig {"],
            ["    static final Map<String, String> DEFAULT_HEADERS = new HashMap<>();"],
        ]
        body = [*consts, ["}"]]
    else:
        head = [[f"# application-{r.choice(['prod', 'staging'])}.properties"]]
        body = consts
    return [*join([*head, *body]), "\n"]


PY_FRAMES = (
    ("/srv/app/{svc}/handlers.py", "handle", "result = await self.dispatch(request)"),
    ("/srv/app/{svc}/service.py", "sync_invoices", "self._client.post(url, json=payload)"),
    (
        "/usr/local/lib/python3.12/site-packages/sqlalchemy/engine/base.py",
        "_execute_context",
        "self.dialect.do_execute(cursor, statement, parameters, context)",
    ),
    (
        "/usr/local/lib/python3.12/site-packages/requests/models.py",
        "raise_for_status",
        "raise HTTPError(http_error_msg, response=self)",
    ),
    (
        "/usr/local/lib/python3.12/site-packages/celery/app/trace.py",
        "__protected_call__",
        "return self.run(*args, **kwargs)",
    ),
    ("/srv/app/{svc}/tasks.py", "run", "return process_batch(batch_id, retries=3)"),
    (
        "/usr/local/lib/python3.12/json/decoder.py",
        "raw_decode",
        'raise JSONDecodeError("Expecting value", s, err.value) from None',
    ),
)
PY_EXC = (
    ("ValueError", "invalid literal for int() with base 10: 'abc'"),
    ("KeyError", "'customer_id'"),
    ("sqlalchemy.exc.OperationalError", "(psycopg2.OperationalError) connection to server failed: Connection refused"),
    ("requests.exceptions.HTTPError", "503 Server Error: Service Unavailable for url: https://api.internal/v1/sync"),
    ("TimeoutError", "timed out after 30 seconds"),
    ("json.decoder.JSONDecodeError", "Expecting value: line 1 column 1 (char 0)"),
    ("RuntimeError", "event loop is closed"),
)
JAVA_FRAMES = (
    "org.springframework.beans.factory.support.AbstractAutowireCapableBeanFactory.doCreateBean(AbstractAutowireCapableBeanFactory.java:628)",
    "org.springframework.beans.factory.support.AbstractBeanFactory.getBean(AbstractBeanFactory.java:208)",
    "org.springframework.boot.SpringApplication.run(SpringApplication.java:335)",
    "com.zaxxer.hikari.pool.HikariPool.checkFailFast(HikariPool.java:562)",
    "org.postgresql.core.v3.ConnectionFactoryImpl.openConnectionImpl(ConnectionFactoryImpl.java:346)",
    "java.base/java.lang.Thread.run(Thread.java:1583)",
    "com.acme.{svc}.InvoiceService.sync(InvoiceService.java:{n})",
    "com.acme.{svc}.Application.main(Application.java:{n})",
    "io.netty.channel.nio.NioEventLoop.run(NioEventLoop.java:569)",
)
JAVA_EXC = (
    ("org.springframework.beans.factory.BeanCreationException", "Error creating bean with name 'dataSource'"),
    ("java.lang.IllegalStateException", "Failed to load ApplicationContext"),
    ("org.postgresql.util.PSQLException", 'FATAL: password authentication failed for user "app"'),
    ("java.net.ConnectException", "Connection refused"),
    ("java.lang.NullPointerException", 'Cannot invoke "String.length()" because "value" is null'),
    ("com.fasterxml.jackson.core.JsonParseException", "Unexpected character ('<' (code 60))"),
)


def b_stacktrace(r: R, ctx: Ctx, items: list[Item], target: int) -> list[Seg]:
    """A Python traceback (frames of two lines) or a Java trace (``at`` lines), with chained causes."""
    svc = r.choice(SERVICES)
    raws = [it for it in items if isinstance(it, Raw)]
    kvs = [it for it in items if isinstance(it, KV)]
    py = ctx.lang == "python"
    nblocks = max(1, len(raws), min(4, target // 900))
    per_block = max(2, target // (nblocks * 120))
    blocks: list[tuple[list[Seg], list[list[list[Seg]]]]] = []  # (exception line, frames); a frame is lines
    for b in range(nblocks):
        frames: list[list[list[Seg]]] = []
        for _ in range(per_block):
            if py:
                path, func, source = r.choice(PY_FRAMES)
                frames.append(
                    [[f'  File "{path.format(svc=svc)}", line {r.randint(10, 2000)}, in {func}'], [f"    {source}"]]
                )
            else:
                at = r.choice(JAVA_FRAMES) if frames else JAVA_FRAMES[6 + r.randint(0, 1)]
                frames.append([["\tat " + at.format(svc=svc, n=r.randint(20, 400))]])
        exc, msg = r.choice(PY_EXC if py else JAVA_EXC)
        blocks.append(([f"{exc}: ", *raws[b].segs] if b < len(raws) else [f"{exc}: {msg}"], frames))
    for kv in kvs:
        _, frames = r.choice(blocks)
        if py:
            k = key_text(kv.key, "snake")
            head: list[Seg] = [f'  File "/srv/app/{svc}/clients.py", line {r.randint(10, 400)}, in connect']
            frame: list[list[Seg]]
            if r.random() < 0.5:
                callee = r.choice(["psycopg2.connect", "boto3.client", "Client", "redis.Redis", "httpx.Client"])
                code: list[Seg] = [
                    f"    conn = {callee}(host={json.dumps(r.choice(HOSTS))}, {k}=",
                    *code_val(r, "python", kv),
                    ")",
                ]
                frame = [head, code]
            else:
                frame = [head, ["    return self._pool.acquire()"], [f"    {k:<12} = '", *kv.val, "'"]]
        else:
            prop = f"{svc}.{key_text(kv.key, r.choice(['dot', 'camel']))}="
            frame = [["Caused by: java.lang.IllegalStateException: Invalid configuration ", prop, *kv.val]]
        frames.insert(r.randint(0, len(frames)), frame)
    out: list[list[Seg]] = []
    if not py and r.random() < 0.6:
        t = a_time(r)
        out.append(
            [
                f"{t:%Y-%m-%d %H:%M:%S}.{t.microsecond // 1000:03d} ERROR 1 --- [main] "
                "o.s.boot.SpringApplication : Application run failed"
            ]
        )
        out.append([""])
    for i, (exc_line, block_frames) in enumerate(blocks):
        lines = [line for fr in block_frames for line in fr]
        if py:
            if i:
                out += [[""], ["During handling of the above exception, another exception occurred:"], [""]]
            out += [["Traceback (most recent call last):"], *lines, exc_line]
        else:
            omitted: list[list[Seg]] = []
            if i and r.random() < 0.6:
                omitted.append([f"\t... {r.randint(5, 80)} common frames omitted"])
            out += [[*(["Caused by: "] if i else []), *exc_line], *lines, *omitted]
    return [*join(out), "\n"]


EMAIL_SUBJECTS = (
    "Re: production access for the new contractor",
    "Fwd: credentials for the staging environment",
    "Invoice #{n} and payment details",
    "Onboarding paperwork",
    "Quick question about the {svc} outage",
    "Updated bank details",
    "Re: Re: API integration",
)
EMAIL_SENTENCES = (
    "Thanks for getting back to me so quickly.",
    "As discussed on the call, here are the details you asked for.",
    "Let me know if anything is missing or if the setup does not work on your side.",
    "We are planning to roll this out to production next week.",
    "I have also attached the signed contract for your records.",
    "Please treat this as confidential and do not forward it outside the team.",
    "The migration window is Saturday between 02:00 and 04:00 UTC.",
    "I will be out of office until Monday, so please reply to the whole thread.",
    "Our finance team will process the payment within five business days.",
    "Could you confirm once you have updated the configuration?",
)


def b_email(r: R, ctx: Ctx, items: list[Item], target: int) -> list[Seg]:
    sender_first, sender_last = r.choice(FIRST), r.choice(LAST)
    dom = r.choice(COMPANY_DOMAINS)
    sender = P(f"{sender_first}.{sender_last}@{dom}", "email")
    head: list[list[Seg]] = [[f"From: {sender_first.capitalize()} {sender_last.capitalize()} <", sender, ">"]]
    to: list[Seg] = ["To: "]
    for i in range(r.randint(1, 3)):
        to += [
            ", " if i else "",
            *([f'"{a_name(r)}" <', P(v_email(r), "email"), ">"] if r.random() < 0.5 else [P(v_email(r), "email")]),
        ]
    head.append(to)
    if r.random() < 0.3:
        head.append(["Cc: ", P(v_email(r), "email")])
    head.append([f"Subject: {r.choice(EMAIL_SUBJECTS).format(n=r.randint(1000, 99999), svc=r.choice(SERVICES))}"])
    head.append([f"Date: {email.utils.format_datetime(a_time(r))}"])
    head += [
        ["MIME-Version: 1.0"],
        ['Content-Type: text/plain; charset="UTF-8"'],
        [""],
        [f"Hi {r.choice(FIRST).capitalize()},"],
        [""],
    ]
    body: list[list[Seg]] = []
    size = seglen(join(head))
    while size < target - 120 or not body:
        para = " ".join(r.sample(EMAIL_SENTENCES, k=r.randint(1, 3)))
        body.append([para])
        size += len(para) + 2
    for it in items:
        if isinstance(it, KV):
            unit: list[Seg] = [f"{key_text(it.key, 'title')}: ", *it.val]
        else:
            unit = list(it.segs)
        body.insert(r.randint(0, len(body)), unit)
    sig: list[list[Seg]] = [
        [""],
        [r.choice(["Thanks,", "Best regards,", "Cheers,"])],
        [f"{sender_first.capitalize()} {sender_last.capitalize()}"],
    ]
    if r.random() < 0.5:
        sig.append([r.choice(["Mobile: ", "Tel: ", "Phone: "]), P(v_phone(r), "phone_number")])
    return [*join([*head, join(body, "\n\n"), *sig]), "\n"]


QUALIFIERS = ("primary", "replica", "legacy", "staging", "backup", "secondary", "fallback", "v2", "eu", "us")


def put(r: R, d: dict[str, object], key: Key, val: object, case: str) -> None:
    """Insert ``key: val`` at a random position of ``d`` without clobbering an existing key."""
    k = key_text(key, case)
    quals = list(QUALIFIERS)
    r.shuffle(quals)
    while k in d:
        q = quals.pop()
        if isinstance(key, str):
            sub = d.setdefault(q, {})
            if isinstance(sub, dict) and key not in sub:
                sub[key] = val
                return
            continue
        k = key_text((q, *key), case)
    pairs = list(d.items())
    pairs.insert(r.randint(0, len(pairs)), (k, val))
    d.clear()
    d.update(pairs)


def leaf(kv: KV) -> V:
    return V(kv.val, raw=kv.raw)


def est(obj: object) -> int:
    return seglen(json_segs(obj, 2))


def grow(r: R, dicts: list[dict[str, object]], target: int, base: int, case: str) -> None:
    """Add harmless pairs to ``dicts`` (empty ones first) until the document is about ``target`` long."""
    size = base
    used = {norm_key(k) for d in dicts for k in d}
    for d in dicts:
        if d:
            continue
        words, v = cfg_pair(r, used)
        d[key_text(words, case)] = v
        size += len(key_text(words, case)) + len(scalar_text(v)) + 10
    while size < target:
        words, v = cfg_pair(r, used)
        d = r.choice(dicts)
        k = key_text(words, case)
        d[k] = v
        size += len(k) + len(scalar_text(v)) + 10


def list_row(r: R, kind: str, case: str) -> dict[str, object]:
    row: dict[str, object] = {
        "id": f"{kind[:3]}_{rs(r, ALNUM, 14)}",
        "object": kind,
        "created": int(a_time(r).timestamp()),
        "status": r.choice(["active", "pending", "past_due", "canceled", "paid"]),
    }
    if r.random() < 0.7:
        row["name"] = a_name(r)
    if r.random() < 0.6:
        row[key_text(("amount", "total"), case)] = r.randint(100, 500000)
        row["currency"] = r.choice(["eur", "usd", "gbp"])
    row["metadata"] = {key_text(("plan",), case): r.choice(["pro", "team", "free"])} if r.random() < 0.5 else {}
    return row


def b_json(r: R, ctx: Ctx, items: list[Item], target: int) -> list[Seg]:
    case = ctx.case
    kvs = [it for it in items if isinstance(it, KV)]
    assert len(kvs) == len(items)
    tree: dict[str, object]
    if ctx.tmpl == "list":
        kind = r.choice(["customer", "invoice", "subscription", "charge", "account"])
        rows = [list_row(r, kind, case) for _ in range(max(1, target // 260))]
        for kv in kvs:
            row = r.choice(rows)
            put(r, row, kv.key, leaf(kv), case)
        tree = {"object": "list", "data": rows, "has_more": r.random() < 0.5, "url": f"/v1/{kind}s"}
    elif ctx.tmpl == "event":
        obj = list_row(r, "customer", case)
        for kv in kvs:
            put(r, obj, kv.key, leaf(kv), case)
        tree = {
            "id": f"evt_{rs(r, ALNUM, 24)}",
            "object": "event",
            "type": r.choice(["customer.updated", "invoice.paid"]),
        }
        tree |= {"created": int(a_time(r).timestamp()), "livemode": True, "data": {"object": obj}}
        grow(r, [obj], target, est(tree), case)
    elif ctx.tmpl == "k8s":
        secret = r.random() < 0.5
        meta: dict[str, object] = {
            "name": f"{a_service(r)}-{'env' if secret else 'config'}",
            "namespace": r.choice(["prod", "staging"]),
        }
        meta["labels"] = {"app.kubernetes.io/name": a_service(r), "app.kubernetes.io/part-of": r.choice(SERVICES)}
        data: dict[str, object] = {}
        for kv in kvs:
            put(r, meta if kv.key == "resourceVersion" else data, kv.key, leaf(kv), ctx.extras.get("k8s_case", "snake"))
        tree = {"apiVersion": "v1", "kind": "Secret" if secret else "ConfigMap", "metadata": meta}
        tree["stringData" if secret else "data"] = data
        grow(r, [data], target, est(tree), ctx.extras.get("k8s_case", "snake"))
    elif ctx.tmpl == "mcp":
        content: list[object] = []
        twin = r.random() < 0.4
        rest = []
        for kv in kvs:
            if any(isinstance(s, Lab) and s.kind == "base64_image" and not s.text.startswith("data:") for s in kv.val):
                content.append({"type": "image", "data": leaf(kv), "mimeType": "image/png"})
            else:
                rest.append(kv)
        result: dict[str, object] = {}
        if twin:
            structured: dict[str, object] = {"service": a_service(r), "settings": {}}
            settings = structured["settings"]
            assert isinstance(settings, dict)
            for kv in rest:
                put(r, settings, kv.key, leaf(kv), case)
            grow(r, [settings], target // 2, est(structured), case)
            content.insert(0, {"type": "text", "text": V(json_segs(structured, None))})
            result["structuredContent"] = structured
        else:
            sub = r.choice(["env", "yaml", "log"])
            sctx = Ctx(sub, lang=r.choice(["iso", "py", "json"]), case="snake", tmpl="app")
            text = BUILDERS[sub](r, sctx, list(rest), max(100, target - 200))
            content.insert(0, {"type": "text", "text": V(text)})
        result["content"] = content
        result["isError"] = False
        tree = {"jsonrpc": "2.0", "id": r.randint(1, 999), "result": result}
    else:
        sections = r.sample(
            ["database", "cache", "auth", "storage", "messaging", "http", "observability", "payments"],
            k=min(5, 1 + target // 500, max(2, len(kvs))),
        )
        secs: dict[str, dict[str, object]] = {s: {} for s in sections}
        for kv in kvs:
            put(r, secs[r.choice(sections)], kv.key, leaf(kv), case)
        tree = {"service": a_service(r), "environment": r.choice(["production", "staging"]), "config": dict(secs)}
        grow(r, list(secs.values()), target, est(tree), case)
    indent = r.choice([2, 2, 4, None])
    return [*json_segs(tree, indent, compact=indent is None and r.random() < 0.5), "\n"]


def b_yaml(r: R, ctx: Ctx, items: list[Item], target: int) -> list[Seg]:
    case = ctx.case
    kvs = [it for it in items if isinstance(it, KV)]
    assert len(kvs) == len(items)
    tmpl = ctx.tmpl
    svc = a_service(r)
    meta: dict[str, object] = {
        "name": f"{svc}-{r.choice(['env', 'config', 'settings'])}",
        "namespace": r.choice(["prod", "staging", "default"]),
    }
    if r.random() < 0.6:
        meta["labels"] = {
            "app.kubernetes.io/name": svc,
            "app.kubernetes.io/managed-by": r.choice(["Helm", "kustomize"]),
        }
    docs: dict[str, object]
    if tmpl in ("secret", "configmap"):
        data: dict[str, object] = {}
        for kv in kvs:
            put(r, meta if kv.key == "resourceVersion" else data, kv.key, leaf(kv), case)
        docs = {"apiVersion": "v1", "kind": "Secret" if tmpl == "secret" else "ConfigMap", "metadata": meta}
        if tmpl == "secret":
            docs["type"] = "Opaque"
        docs["stringData" if tmpl == "secret" else "data"] = data
        grow(r, [data], target, est(docs), case)
    elif tmpl == "compose":
        env: dict[str, object] = {}
        as_list = r.random() < 0.4 and all("\n" not in plain(kv.val) for kv in kvs)
        app: dict[str, object] = {
            "image": f"ghcr.io/acme/{svc}:{r.randint(1, 9)}.{r.randint(0, 30)}",
            "restart": "unless-stopped",
        }
        app["ports"] = [f"{r.choice([3000, 8080])}:{r.choice([3000, 8080])}"]
        services: dict[str, object] = {r.choice(SERVICES): app}
        for kv in kvs:
            if kv.key == "resourceVersion":
                continue
            if kv.key == ("image",):
                services["sidecar"] = {"image": leaf(kv)}
                continue
            put(r, env, kv.key, leaf(kv), "upper")
        grow(r, [env], target, est(services) + 40, "upper")
        app["environment"] = (
            [V([f"{k}=", *(v.segs if isinstance(v, V) else [scalar_text(v)])]) for k, v in env.items()]
            if as_list
            else env
        )
        app["depends_on"] = ["db"]
        services["db"] = {"image": "postgres:16", "volumes": ["pgdata:/var/lib/postgresql/data"]}
        docs = {"services": services, "volumes": {"pgdata": {}}}
    elif tmpl == "workflow":
        env = {}
        for kv in kvs:
            put(r, env, kv.key, leaf(kv), "upper")
        job: dict[str, object] = {"runs-on": "ubuntu-latest", "env": env}
        job["steps"] = [{"uses": "actions/checkout@v4"}, {"name": "Deploy", "run": f"make deploy SERVICE={svc}"}]
        docs = {"name": "deploy", "on": {"push": {"branches": ["main"]}}, "jobs": {"deploy": job}}
        grow(r, [env], target, est(docs), "upper")
    elif tmpl == "deployment":
        envs: list[object] = []
        container: dict[str, object] = {
            "name": svc,
            "image": f"ghcr.io/acme/{svc}:{r.randint(1, 9)}.{r.randint(0, 30)}.{r.randint(0, 9)}",
        }
        for kv in kvs:
            if kv.key == "resourceVersion":
                put(r, meta, kv.key, leaf(kv), case)
            elif kv.key == ("image",):
                container["image"] = leaf(kv)
            else:
                envs.insert(r.randint(0, len(envs)), {"name": key_text(kv.key, "upper"), "value": leaf(kv)})
        if ctx.extras.get("refs"):
            for _ in range(r.randint(1, 3)):
                name = N(
                    r.choice(["db-credentials", "api-token", "stripe-keys", f"{svc}-secrets"]), "password_word_key"
                )
                key = N(r.choice(["password", "token", "api-key", "client-secret"]), "password_word_key")
                var = key_text(r.choice(PASSWORD_KEYS), "upper")
                if r.random() < 0.5:
                    ref: object = {"secretKeyRef": V(["{name: ", name, ", key: ", key, "}"], raw=True)}
                else:
                    ref = {"secretKeyRef": {"name": V([name]), "key": V([key])}}
                envs.insert(r.randint(0, len(envs)), {"name": var, "valueFrom": ref})
        size = est(container) + 400
        while size < target:
            words, v = cfg_pair(r)
            envs.append({"name": key_text(words, "upper"), "value": scalar_text(v)})
            size += 40
        container["env"] = envs
        container["resources"] = {
            "limits": {"cpu": f"{r.choice([250, 500, 1000])}m", "memory": f"{r.choice([256, 512, 1024])}Mi"}
        }
        spec = {"replicas": r.randint(1, 6), "template": {"spec": {"containers": [container]}}}
        docs = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta, "spec": spec}
    else:  # app config / helm values
        sections = r.sample(
            ["server", "database", "redis", "auth", "storage", "mail", "logging", "queue", "payments"],
            k=min(5, 1 + target // 500, max(2, len(kvs))),
        )
        secs: dict[str, dict[str, object]] = {s: {} for s in sections}
        for kv in kvs:
            put(r, secs[r.choice(sections)], kv.key, leaf(kv), case)
        docs = dict(secs)
        if tmpl == "helm":
            docs = {
                key_text(("replica", "count"), "camel"): r.randint(1, 5),
                "image": {"repository": f"ghcr.io/acme/{svc}", "pullPolicy": "IfNotPresent"},
                **docs,
            }
        grow(r, list(secs.values()), target, est(docs), case)
    head: list[Seg] = [r.choice(["---\n", "", "", f"# {svc}\n"])]
    return head + yaml_segs(r, docs)


# --------------------------------------------------------------------------------------------------------------------
# Tables (psql / mysql result sets and CSV exports): a schema is a header and a row generator; a cell is a list of
# segments (a connection string cell holds a labelled password inside it).

Cell = list[Seg]


def ts_sql(r: R) -> str:
    return f"{a_time(r):%Y-%m-%d %H:%M:%S}"


def _integration_row(r: R) -> list[Cell]:
    provider, gen, cls = r.choice(
        [
            ("github", v_github, "github_token"),
            ("gitlab", v_gitlab, "gitlab_token"),
            ("slack", v_slack_token, "slack_token"),
            ("slack-webhook", v_slack_webhook, "slack_webhook"),
            ("stripe", v_stripe, "stripe_key"),
            ("openai", v_llm, "llm_api_key"),
            ("google-maps", v_gcp_key, "gcp_api_key"),
            ("aws", v_aws_key_id, "aws_access_key_id"),
        ]
    )
    return [[str(r.randint(1, 9999))], [provider], [P(gen(r), cls)], [ts_sql(r)]]


def _opt(r: R, p: float, cell: Cell) -> Cell:
    return cell if r.random() < p else []


Schema = tuple[list[str], Callable[[R], list[Cell]]]
POS_SCHEMAS: dict[str, Schema] = {
    "users": (
        ["id", "name", "email", "phone", "created_at"],
        lambda r: [
            [str(r.randint(1, 99999))],
            [a_name(r)],
            [P(v_email(r), "email")],
            _opt(r, 0.8, [P(v_phone(r), "phone_number")]),
            [ts_sql(r)],
        ],
    ),
    "payments": (
        ["id", "customer_id", "card_number", "amount", "currency", "status"],
        lambda r: [
            [str(r.randint(1, 99999))],
            [str(r.randint(1, 9999))],
            [P(v_card(r), "credit_card")],
            [f"{r.randint(1, 9999)}.{r.randint(0, 99):02d}"],
            [r.choice(["EUR", "USD"])],
            [r.choice(["captured", "refunded", "failed"])],
        ],
    ),
    "employees": (
        ["emp_id", "full_name", "ssn", "department", "iban"],
        lambda r: [
            [str(r.randint(1000, 9999))],
            [a_name(r)],
            [P(v_ssn(r), "us_ssn")],
            [r.choice(["eng", "sales", "finance", "ops"])],
            _opt(r, 0.85, [P(v_iban(r), "iban")]),
        ],
    ),
    "payouts": (
        ["id", "vendor", "iban", "amount"],
        lambda r: [
            [str(r.randint(1, 99999))],
            [r.choice(COMPANY_DOMAINS).split(".")[0]],
            [P(v_iban(r), "iban")],
            [f"{r.randint(10, 99999)}.00"],
        ],
    ),
    "contacts": (
        ["name", "company", "email", "phone"],
        lambda r: [
            [a_name(r)],
            [r.choice(COMPANY_DOMAINS).split(".")[0].title()],
            [P(v_email(r), "email")],
            [P(v_phone(r), "phone_number")],
        ],
    ),
    "integrations": (["id", "provider", "credential", "created_at"], _integration_row),
    "connections": (
        ["name", "dsn", "owner"],
        lambda r: [[f"{r.choice(SERVICES)}-{r.choice(['prod', 'replica'])}"], v_uri(r), [a_user(r)]],
    ),
    "sessions": (
        ["id", "user_id", "token", "expires_at"],
        lambda r: [[str(r.randint(1, 99999))], [str(r.randint(1, 9999))], [P(v_jwt(r), "jwt")], [ts_sql(r)]],
    ),
}


def _sha_cell(r: R) -> Cell:
    return [N(rs(r, HEX, 40), "git_sha")] if r.random() < 0.5 else [N(rs(r, HEX, r.randint(7, 12)), "git_sha_short")]


NEG_SCHEMAS: dict[str, Schema] = {
    "deployments": (
        ["id", "service", "version", "commit", "image_digest", "deployed_at"],
        lambda r: [
            [N(n_uuid(r), "uuid")],
            [a_service(r)],
            [N(n_version(r), "version")],
            _sha_cell(r),
            [N(n_sha256(r), "docker_digest")],
            [N(n_timestamp(r), "timestamp")],
        ],
    ),
    "shipments": (
        ["order_number", "status", "tracking_number", "created_at"],
        lambda r: [
            [N(n_luhn_invalid(r), "luhn_invalid_number")],
            [r.choice(["shipped", "delivered", "in_transit"])],
            [N(n_luhn_invalid(r), "luhn_invalid_number")],
            [N(n_timestamp(r), "timestamp")],
        ],
    ),
    "kyc_rejections": (
        ["id", "ssn", "iban", "reason"],
        lambda r: [
            [str(r.randint(1, 9999))],
            [N(n_bad_ssn(r), "ssn_invalid")],
            [N(n_bad_iban(r), "iban_bad_checksum")],
            [r.choice(["ssn never issued", "iban checksum mismatch", "both invalid"])],
        ],
    ),
    "themes": (
        ["name", "primary_color", "accent_color"],
        lambda r: [[r.choice(WORDS)], [N(n_hex_colour(r), "hex_colour")], [N(n_hex_colour(r), "hex_colour")]],
    ),
    "services": (
        ["name", "port", "timeout", "health_url"],
        lambda r: [
            [a_service(r)],
            [N(str(r.choice([80, 443, 8080, 9090, 5432])), "port")],
            [N(n_duration(r), "duration")],
            [N(n_url(r), "url_no_credentials")],
        ],
    ),
    "employees": (
        ["emp_id", "name", "dob", "hire_date"],
        lambda r: [
            [str(r.randint(1000, 9999))],
            [a_name(r)],
            [N(f"{a_time(r) - timedelta(days=r.randint(7000, 20000)):%Y-%m-%d}", "date")],
            [N(f"{a_time(r):%Y-%m-%d}", "date")],
        ],
    ),
    "packages": (
        ["name", "version", "integrity"],
        lambda r: [
            [r.choice(NPM_PACKAGES)],
            [N(n_version(r).lstrip("v"), "version")],
            [N(n_integrity(r), "npm_integrity")],
        ],
    ),
    "api_clients": (
        ["client_id", "publishable_key", "idempotency_key", "created_at"],
        lambda r: [
            [N(n_uuid(r), "uuid")],
            [N("pk_live_" + rs(r, ALNUM, 24), "stripe_publishable_key")],
            [N(n_uuid(r), "uuid")],
            [N(n_timestamp(r), "timestamp")],
        ],
    ),
}
CLEAN_SCHEMAS: dict[str, Schema] = {
    "products": (
        ["id", "sku", "name", "price", "stock"],
        lambda r: [
            [str(r.randint(1, 9999))],
            [f"SKU-{r.randint(1000, 99999)}"],
            [f"{r.choice(WORDS).title()} {r.choice(['mug', 'shirt', 'lamp', 'chair', 'cable'])}"],
            [f"{r.randint(1, 500)}.{r.randint(0, 99):02d}"],
            [str(r.randint(0, 900))],
        ],
    ),
    "jobs": (
        ["id", "name", "status", "duration_ms"],
        lambda r: [
            [str(r.randint(1, 99999))],
            [r.choice(["nightly-export", "reindex", "cleanup", "sync-invoices"])],
            [r.choice(["succeeded", "failed", "running"])],
            [str(r.randint(10, 900000))],
        ],
    ),
    "orders_by_day": (
        ["day", "orders", "revenue", "refunds"],
        lambda r: [
            [f"{a_time(r):%Y-%m-%d}"],
            [str(r.randint(10, 9000))],
            [f"{r.randint(1000, 900000)}.{r.randint(0, 99):02d}"],
            [str(r.randint(0, 50))],
        ],
    ),
    "customers": (
        ["id", "name", "country", "plan", "seats"],
        lambda r: [
            [str(r.randint(1, 99999))],
            [a_name(r)],
            [r.choice(["DE", "US", "FR", "GB", "NL"])],
            [r.choice(["free", "team", "enterprise"])],
            [str(r.randint(1, 500))],
        ],
    ),
}


def _numeric(cell: Cell) -> bool:
    return bool(re.fullmatch(r"-?\d+(\.\d+)?", plain(cell)))


def b_table(r: R, ctx: Ctx, mode: str, target: int) -> list[Seg]:
    pool = POS_SCHEMAS if mode == "pos" else NEG_SCHEMAS if mode == "neg" else CLEAN_SCHEMAS
    name = r.choice(list(pool))
    header, gen = pool[name]
    rows: list[list[Cell]] = []
    size = 0
    limit = 12 if mode == "neg" else 40
    while (size < target or len(rows) < 2) and len(rows) < limit:
        rows.append(gen(r))
        size += sum(seglen(c) for c in rows[-1]) + 3 * len(header)
    if ctx.fmt == "csv":
        sep = ctx.extras.get("sep", ",")
        lines: list[list[Seg]] = [[sep.join(header)]]
        for row in rows:
            line: list[Seg] = []
            for i, cell in enumerate(row):
                if i:
                    line.append(sep)
                t = plain(cell)
                q = '"' if (sep in t or '"' in t or ctx.extras.get("quote_all")) else ""
                line += [q, *cell, q]
            lines.append(line)
        return [*join(lines), "\n"]
    widths = [max(len(h), *(seglen(row[i]) for row in rows)) for i, h in enumerate(header)]
    numeric = [all(_numeric(row[i]) or not row[i] for row in rows) for i in range(len(header))]

    def cells(row: list[Cell]) -> list[list[Seg]]:
        out = []
        for i, cell in enumerate(row):
            pad = " " * (widths[i] - seglen(cell))
            out.append([pad, *cell] if numeric[i] else [*cell, pad])
        return out

    query = f"SELECT {', '.join(header)} FROM {name}{r.choice(['', ' ORDER BY 1', ' LIMIT 50', ' WHERE 1=1'])};"
    if ctx.lang == "mysql":
        rule = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
        lines = [
            [f"mysql> {query}"],
            [rule],
            ["| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |"],
            [rule],
        ]
        for row in rows:
            lines.append(["| ", *join(cells(row), " | "), " |"])
        lines += [[rule], [f"{len(rows)} rows in set (0.{r.randint(0, 99):02d} sec)"]]
        return [*join(lines), "\n"]
    lines = [
        [f"{r.choice(SERVICES)}=> {query}"],
        [" " + " | ".join(h.center(w) for h, w in zip(header, widths, strict=True))],
    ]
    lines.append(["+".join("-" * (w + 2) for w in widths)])
    for row in rows:
        lines.append([" ", *join(cells(row), " | ")])
    lines.append([f"({len(rows)} row{'s' if len(rows) != 1 else ''})"])
    return [*join(lines), "\n"]


# --------------------------------------------------------------------------------------------------------------------
# Records

BUILDERS: dict[str, Callable[[R, Ctx, list[Item], int], list[Seg]]] = {
    "log": b_log,
    "env": b_env,
    "shell": b_shell,
    "code": b_code,
    "stacktrace": b_stacktrace,
    "email": b_email,
    "json": b_json,
    "yaml": b_yaml,
}
FMT_WEIGHTS: dict[str, dict[str, int]] = {
    "clean": {
        "log": 16,
        "env": 9,
        "yaml": 13,
        "json": 15,
        "sql": 9,
        "stacktrace": 8,
        "csv": 7,
        "code": 11,
        "shell": 12,
    },
    "pos": {
        "log": 14,
        "env": 10,
        "yaml": 12,
        "json": 12,
        "sql": 6,
        "stacktrace": 7,
        "csv": 5,
        "code": 10,
        "shell": 11,
        "email": 10,
    },
    "neg": {"log": 13, "env": 9, "yaml": 15, "json": 14, "sql": 7, "stacktrace": 6, "csv": 5, "code": 12, "shell": 16},
}
POS_WEIGHTS = {cls: 2 if cls in ("password_assignment", "high_entropy_secret") else 1 for cls in POS_FACTORIES}
NEG_WEIGHTS = dict.fromkeys(NEG_FACTORIES, 1) | {"placeholder": 3, "password_word_key": 3, "key_name_non_secret": 2}
NEG_WEIGHTS |= dict.fromkeys(("k8s_resource_version", "pem_public", "env_reference", "path", "base64_image"), 2)
NEG_WEIGHTS |= dict.fromkeys(("sha256_digest", "pip_hash", "npm_package_spec"), 2)


class Deck:
    """Deal classes round-robin (weighted, shuffled) so that every class gets its share of records."""

    def __init__(self, r: R, weights: dict[str, int]) -> None:
        self.r, self.weights, self.cards = r, weights, list[str]()

    def _refill(self) -> None:
        new = [name for name, w in self.weights.items() for _ in range(w)]
        self.r.shuffle(new)
        self.cards += new

    def draw(self, k: int, ok: Callable[[str], bool]) -> list[str]:
        out: list[str] = []
        for _ in range(k):
            for _attempt in range(3):
                idx = next((i for i, c in enumerate(self.cards) if ok(c)), None)
                if idx is not None:
                    out.append(self.cards.pop(idx))
                    break
                self._refill()
        return out


def new_ctx(r: R, fmt: str, mode: str) -> Ctx:
    if fmt == "log":
        return Ctx(fmt, lang=r.choice(["iso", "iso", "py", "json", "laravel", "klog", "syslog"]))
    if fmt == "shell":
        return Ctx(fmt, lang=r.choice(["history", "prompt", "prompt"]))
    if fmt == "code":
        return Ctx(fmt, lang=r.choice(["python", "python", "js", "go", "java", "properties"]))
    if fmt == "stacktrace":
        return Ctx(fmt, lang=r.choice(["python", "python", "java"]))
    if fmt == "json":
        tmpl = r.choice(["config", "config", "list", "event", "k8s", "mcp", "mcp"])
        return Ctx(
            fmt,
            case=r.choice(["snake", "snake", "camel"]),
            tmpl=tmpl,
            extras={"k8s_case": r.choice(["snake", "upper", "kebab"])},
        )
    if fmt == "yaml":
        tmpls = ["secret", "configmap", "compose", "app", "app", "helm", "workflow"] + (
            ["deployment"] * 2 if mode != "pos" else []
        )
        tmpl = r.choice(tmpls)
        case = (
            r.choice(["upper", "snake", "kebab"]) if tmpl in ("secret", "configmap") else r.choice(["snake", "camel"])
        )
        return Ctx(fmt, case=case, tmpl=tmpl, extras={"refs": "1"} if mode == "neg" and r.random() < 0.6 else {})
    if fmt in ("sql", "csv"):
        return Ctx(
            fmt,
            lang=r.choice(["psql", "psql", "mysql"]),
            extras={"sep": r.choice([",", ",", ";", "\t"]), "quote_all": "1" if r.random() < 0.2 else ""},
        )
    return Ctx(fmt)


def assemble(segs: Sequence[Seg]) -> tuple[str, tuple[Span, ...], tuple[Negative, ...]]:
    parts: list[str] = []
    spans: list[Span] = []
    negs: list[Negative] = []
    pos = 0
    for s in segs:
        t = s if isinstance(s, str) else s.text
        if isinstance(s, Lab):
            if s.cls:
                spans.append(Span(pos, pos + len(t), s.cls))
            elif s.kind:
                negs.append(Negative(pos, pos + len(t), s.kind))
        parts.append(t)
        pos += len(t)
    return "".join(parts), tuple(spans), tuple(negs)


def make_record(r: R, mode: str, pos_deck: Deck, neg_deck: Deck) -> CorpusRecord:
    weights = FMT_WEIGHTS[mode]
    fmt = r.choices(list(weights), weights=list(weights.values()))[0]
    target = loguniform(r, 100, 6000)
    ctx = new_ctx(r, fmt, mode)
    if fmt in ("sql", "csv"):
        segs = b_table(r, ctx, mode, target)
    else:
        items: list[Item] = []
        k = min(8, 1 + target // 600 + r.randint(0, 2))
        if mode == "pos":
            if fmt == "log" and r.random() < 0.4:
                items = [p_ip_line(r, ctx) for _ in range(r.randint(2, 7))]
                k = 0 if r.random() < 0.4 else k
            items += [POS_FACTORIES[c](r, ctx) for c in pos_deck.draw(k, lambda c: pos_ok(c, ctx))]
        elif mode == "neg":
            items = [NEG_FACTORIES[c](r, ctx) for c in neg_deck.draw(k + 1, lambda c: neg_ok(c, ctx))]
        segs = BUILDERS[fmt](r, ctx, items, target)
        while seglen(segs) < 100:  # too short to be realistic output: build it again, longer
            target += 150
            segs = BUILDERS[fmt](r, ctx, items, target)
    if fmt in ("email", "csv") and r.random() < 0.2:  # RFC 5322 mail and Excel exports use CRLF
        segs = mapseg(segs, lambda s: s.replace("\n", "\r\n"))
    text, spans, negs = assemble(segs)
    return CorpusRecord(text, fmt, spans, negs)


def generate(seed: int = 4, n: int = 2000) -> list[CorpusRecord]:
    """``n`` records: about half clean, a quarter with positives, a quarter with hard negatives only."""
    r = random.Random(seed)
    modes = ["pos"] * (n // 4) + ["neg"] * (n // 4)
    modes += ["clean"] * (n - len(modes))
    r.shuffle(modes)
    pos_deck, neg_deck = Deck(r, POS_WEIGHTS), Deck(r, NEG_WEIGHTS)
    records = []
    for mode in modes:
        rec = make_record(r, mode, pos_deck, neg_deck)
        problems = check_record(rec)
        if mode != "pos" and rec.spans:
            problems.append(f"{mode} record has positive spans")
        if mode == "neg" and not rec.negatives:
            problems.append("hard-negative record without negatives")
        if problems:
            raise AssertionError(f"bad {rec.fmt} record: {problems}\n{rec.text[:2000]}")
        records.append(rec)
    return records


# --------------------------------------------------------------------------------------------------------------------
# Label checks: every span is what its class says, every negative is what its kind says, nothing overlaps.

PASSWORD_WORDS = ("password", "passwd", "pwd", "secret", "token", "apikey")
KEYLIKE_WORDS = ("key", "salt", "hmac", "pepper", "credentials", "signature")

FORMATTED_RES: dict[str, re.Pattern[str]] = {
    "aws_access_key_id": re.compile(r"(?:AKIA|ASIA)[A-Z2-7]{16}"),
    "gcp_api_key": re.compile(r"AIza[0-9A-Za-z_-]{35}"),
    "github_token": re.compile(r"gh[pousr]_[A-Za-z0-9]{36}|github_pat_[A-Za-z0-9]{22}_[A-Za-z0-9]{59}"),
    "gitlab_token": re.compile(r"glpat-[0-9A-Za-z_-]{20}"),
    "slack_token": re.compile(r"xox[bpas]-(?:2-)?\d{10,13}-\d{10,13}-(?:\d{10,13}-[a-f0-9]{32,64}|[A-Za-z0-9]{24})"),
    "slack_webhook": re.compile(r"https://hooks\.slack\.com/services/T[A-Z0-9]{8,10}/B[A-Z0-9]{8,10}/[A-Za-z0-9]{24}"),
    "stripe_key": re.compile(r"(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{24,99}"),
    "llm_api_key": re.compile(r"sk-ant-api03-[A-Za-z0-9_-]{93}AA|sk-proj-[A-Za-z0-9_-]{100,150}|sk-[A-Za-z0-9]{48}"),
    "jwt": re.compile(r"eyJ[A-Za-z0-9_-]+\.eyJ[A-Za-z0-9_-]+\.(?:[A-Za-z0-9_-]{342}|[A-Za-z0-9_-]{43})"),
}
_KEY_BEFORE = re.compile(
    r"((?:[A-Za-z][\w.\-]* ){0,3}[A-Za-z][\w.\-]*)(?:\\?[\"'])?\s*(?::=|=|:)\s*(?:\\?[\"'`]|\"\"\"\n?)?$"
)


def norm_key(k: str) -> str:
    return re.sub(r"[^a-z0-9]", "", k.lower())


def key_before(text: str, start: int) -> str | None:
    m = _KEY_BEFORE.search(text[max(0, start - 100) : start])
    return norm_key(m.group(1)) if m else None


def _pem_ok(t: str) -> bool:
    t = re.sub(r"\\n|\r?\n[ \t]*", "\n", t)
    m = re.fullmatch(r"-----BEGIN ((?:RSA |EC |OPENSSH |ENCRYPTED )?PRIVATE KEY)-----\n(.*)\n-----END \1-----", t, re.S)
    if not m:
        return False
    body = re.sub(r"^(Proc-Type|DEK-Info):.*\n|^\n", "", m.group(2), flags=re.M)
    return all(re.fullmatch(r"[A-Za-z0-9+/]{1,64}={0,2}", line) for line in body.split("\n"))


def _jwt_ok(t: str) -> bool:
    if not FORMATTED_RES["jwt"].fullmatch(t):
        return False
    head, payload, _ = t.split(".")
    decoded = [json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4))) for p in (head, payload)]
    return decoded[0].get("typ") == "JWT" and decoded[0].get("alg") in ("HS256", "RS256") and "exp" in decoded[1]


def _card_ok(t: str) -> bool:
    d = re.sub(r"[ -]", "", t)
    if not d.isdigit() or not luhn_ok(d) or re.search(r"[ -]{2}", t):
        return False
    if d[0] == "4":
        return len(d) in (13, 16, 19)
    if d[:2] in ("34", "37"):
        return len(d) == 15
    if 51 <= int(d[:2]) <= 55 or 2221 <= int(d[:4]) <= 2720:
        return len(d) == 16
    return len(d) == 16 and (d.startswith(("6011", "65")) or 644 <= int(d[:3]) <= 649)


def span_problem(text: str, sp: Span) -> str | None:
    t = text[sp.start : sp.end]
    if not t or t != t.strip():
        return "empty or padded"
    before = text[max(0, sp.start - 120) : sp.start]
    c = sp.cls
    ok: bool
    if c in FORMATTED_RES and c != "jwt":
        ok = bool(FORMATTED_RES[c].fullmatch(t))
    elif c == "jwt":
        ok = _jwt_ok(t)
    elif c == "aws_secret_access_key":
        k = key_before(text, sp.start)
        ok = bool(re.fullmatch(r"[A-Za-z0-9/+]{40}", t)) and k is not None and k.endswith("secretaccesskey")
    elif c == "azure_connection_string":
        ok = bool(re.fullmatch(r"[A-Za-z0-9+/]{86}==", t) and before.endswith("AccountKey="))
        ok = ok or bool(re.fullmatch(r"[A-Za-z0-9+/]{43}=", t) and before.endswith("SharedAccessKey="))
    elif c == "private_key":
        ok = _pem_ok(t)
    elif c == "uri_credentials":
        ok = bool(re.search(r"(?:^|[^\w+:])(?:" + "|".join(map(re.escape, URI_SCHEMES)) + r")://[\w.-]*:$", before))
        ok = ok and text[sp.end : sp.end + 1] == "@" and bool(re.fullmatch(r"[A-Za-z0-9%._~-]{8,}", t))
    elif c == "http_auth":
        m = re.search(r"(?i)(basic|bearer) $", before)
        ok = bool(m) and bool(re.fullmatch(r"[A-Za-z0-9._~+/=-]+", t)) and not t.startswith("eyJ")
        if ok and m and m.group(1).lower() == "basic":
            ok = ":" in base64.b64decode(t).decode()
        elif ok:
            ok = len(t) >= 20
        ok = ok and not any(rx.search(t) for rx in FORMATTED_RES.values())
    elif c == "email":
        ok = bool(re.fullmatch(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}", t))
    elif c == "credit_card":
        ok = _card_ok(t)
    elif c == "iban":
        ok = iban_ok(t) and bool(re.fullmatch(r"[A-Z]{2}\d{2}[A-Z0-9]+|(?:[A-Z0-9]{4} )+[A-Z0-9]{1,4}", t))
    elif c == "us_ssn":
        ok = ssn_ok(t)
    elif c == "phone_number":
        ok = phone_ok(t) and bool(re.fullmatch(r"[+()0-9][0-9 ().-]+[0-9]", t))
    elif c == "ip_address":
        try:
            ipaddress.ip_address(t)
            ok = True
        except ValueError:
            ok = False
    elif c == "password_assignment":
        k = key_before(text, sp.start)
        ok = k is not None and any(w in k for w in PASSWORD_WORDS) and 8 <= len(t) <= 40
        ok = ok and not re.search(r"[\s\"'`\\]", t) and not PLACEHOLDER_RE.fullmatch(t)
    elif c == "high_entropy_secret":
        k = key_before(text, sp.start)
        ok = k is not None and not any(w in k for w in PASSWORD_WORDS) and any(w in k for w in KEYLIKE_WORDS)
        ok = ok and 24 <= len(t) <= 64 and entropy(t) >= 3.2 and bool(re.fullmatch(r"[A-Za-z0-9+/=]+", t))
    else:
        return f"unknown class {c!r}"
    return None if ok else f"{c} label does not hold: {t[:80]!r}"


NEG_RES: dict[str, re.Pattern[str]] = {
    "uuid": re.compile(r"(?i)[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"),
    "git_sha": re.compile(r"[0-9a-f]{40}"),
    "git_sha_short": re.compile(r"[0-9a-f]{7,12}"),
    "npm_integrity": re.compile(r"sha512-[A-Za-z0-9+/]{86}==|sha1-[A-Za-z0-9+/]{27}="),
    "sha256_digest": re.compile(r"(?:sha256:)?[0-9a-f]{64}"),
    "docker_digest": re.compile(r"sha256:[0-9a-f]{64}"),
    "pip_hash": re.compile(r"sha256:[0-9a-f]{64}"),
    "go_sum_hash": re.compile(r"h1:[A-Za-z0-9+/]{43}="),
    "luhn_invalid_number": re.compile(r"\d[\d -]{11,22}\d"),
    "iban_bad_checksum": re.compile(r"[A-Z]{2}\d{2}[A-Z0-9 ]+"),
    "ssn_invalid": re.compile(r"\d{3}-\d{2}-\d{4}"),
    "date": re.compile(r"\d{4}-\d{2}-\d{2}"),
    "stripe_publishable_key": re.compile(r"pk_(?:live|test)_[A-Za-z0-9]{24,99}"),
    "hex_colour": re.compile(r"#(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{6}|[0-9a-fA-F]{8})"),
    "k8s_resource_version": re.compile(r"\d{5,9}"),
    "port": re.compile(r"\d{2,5}(?::\d{2,5})?"),
    "pem_public": re.compile(r"-----BEGIN (CERTIFICATE|(?:RSA )?PUBLIC KEY)-----.*-----END \1-----", re.S),
    "base64_image": re.compile(r"(?:data:image/(?:png|jpeg);base64,)?(?:iVBORw0KGgo|/9j/4)[A-Za-z0-9+/]+={0,2}"),
    "npm_package_spec": re.compile(r"(?:@[a-z0-9-]+/)?[a-z0-9.-]+@\d+\.\d+\.\d+"),
}


def negative_problem(text: str, ng: Negative) -> str | None:
    t = text[ng.start : ng.end]
    if not t or t != t.strip():
        return "empty or padded"
    k = ng.kind
    if k not in NEGATIVE_KINDS:
        return f"unknown kind {k!r}"
    rx = NEG_RES.get(k)
    ok = rx is None or bool(rx.fullmatch(t))
    if k == "luhn_invalid_number":
        d = re.sub(r"[ -]", "", t)
        ok = ok and 13 <= len(d) <= 19 and not luhn_ok(d)
    elif k == "iban_bad_checksum":
        ok = ok and not iban_ok(t)
    elif k == "ssn_invalid":
        ok = ok and not ssn_ok(t)
    elif k == "placeholder":
        ok = bool(PLACEHOLDER_RE.fullmatch(t))
    elif k == "timestamp":
        ok = bool(re.fullmatch(r"[\dA-Za-z:,.+ -]+", t)) and any(ch.isdigit() for ch in t)
    elif k == "version":
        ok = bool(re.fullmatch(r"v?\d+(\.\d+){1,3}([-+][\w.+-]+)?", t))
    elif k == "url_no_credentials":
        ok = "://" in t and not re.search(r"://[^/@\s]*:[^/@\s]*@", t)
    # a negative must not itself be a positive
    if re.fullmatch(r"[\d -]{13,23}", t) and luhn_ok(re.sub(r"[ -]", "", t)) and k != "timestamp":
        return f"{k} is Luhn-valid: {t!r}"
    if any(rx.fullmatch(t) for rx in FORMATTED_RES.values()):
        return f"{k} matches a secret format: {t[:60]!r}"
    return None if ok else f"{k} label does not hold: {t[:80]!r}"


_EMAIL_RE = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
_CARD_RE = re.compile(r"(?<![\w-])\d(?:[ -]?\d){12,18}(?![\w-])")
_SSN_RE = re.compile(r"(?<![\d-])\d{3}-\d{2}-\d{4}(?![\d-])")
_IBAN_RE = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b")


def unlabelled(rec: CorpusRecord) -> list[str]:
    """Secrets or PII in the text that no label covers (a clean record must have none; nor may a positive one)."""
    marks = [(s.start, s.end) for s in rec.spans] + [(n.start, n.end) for n in rec.negatives]

    def labelled(start: int, end: int) -> bool:
        return any(s < end and start < e for s, e in marks)

    found: list[str] = []
    checks: list[tuple[str, re.Pattern[str], Callable[[str], bool]]] = [
        *((c, rx, lambda t: True) for c, rx in FORMATTED_RES.items()),
        ("email", _EMAIL_RE, lambda t: True),
        ("credit_card", _CARD_RE, _card_ok),
        ("us_ssn", _SSN_RE, ssn_ok),
        ("iban", _IBAN_RE, iban_ok),
    ]
    for cls, rx, valid in checks:
        for m in rx.finditer(rec.text):
            if valid(m.group()) and not labelled(m.start(), m.end()):
                found.append(f"unlabelled {cls}: {m.group()[:60]!r}")
    return found


def check_record(rec: CorpusRecord) -> list[str]:
    """Everything wrong with a record's labels (empty when they are exact and consistent)."""
    problems: list[str] = unlabelled(rec)
    marks = [(s.start, s.end, f"span {s.cls}") for s in rec.spans] + [
        (n.start, n.end, f"negative {n.kind}") for n in rec.negatives
    ]
    for s, e, what in marks:
        if not 0 <= s < e <= len(rec.text):
            problems.append(f"{what} out of bounds: {s}..{e}")
    marks.sort()
    for (s1, e1, w1), (s2, e2, w2) in itertools.pairwise(marks):
        if s2 < e1:
            problems.append(f"{w1} [{s1}:{e1}] overlaps {w2} [{s2}:{e2}]")
    for sp in rec.spans:
        if sp.cls not in CLASSES:
            problems.append(f"unknown class {sp.cls!r}")
        elif p := span_problem(rec.text, sp):
            problems.append(p)
    for ng in rec.negatives:
        if p := negative_problem(rec.text, ng):
            problems.append(p)
    if rec.fmt not in FORMATS:
        problems.append(f"unknown format {rec.fmt!r}")
    return problems


# --------------------------------------------------------------------------------------------------------------------
# CLI


def to_json(rec: CorpusRecord) -> dict[str, object]:
    return {
        "fmt": rec.fmt,
        "text": rec.text,
        "spans": [{"start": s.start, "end": s.end, "cls": s.cls} for s in rec.spans],
        "negatives": [{"start": n.start, "end": n.end, "kind": n.kind} for n in rec.negatives],
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write the labelled masking corpus as JSON lines.")
    parser.add_argument("--out", required=True, help="output file (.jsonl), or - for stdout")
    parser.add_argument("--n", type=int, default=2000, help="number of records (default 2000)")
    parser.add_argument("--seed", type=int, default=4, help="random seed (default 4)")
    args = parser.parse_args(argv)
    records = generate(args.seed, args.n)
    lines = "".join(json.dumps(to_json(rec)) + "\n" for rec in records)
    if args.out == "-":
        sys.stdout.write(lines)
    else:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(lines)
        spans = sum(len(rec.spans) for rec in records)
        print(f"wrote {len(records)} records ({spans} spans) to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
