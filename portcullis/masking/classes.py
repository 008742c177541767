"""The catalogue of what masking knows how to find: one entry per class, grouped by kind and tier.

``kind`` is ``secret`` or ``pii`` (configuration can name a kind instead of listing classes). ``tier`` says how
a class is recognised: ``formatted`` (a fixed shape or prefix), ``checksummed`` (a checksum or validity rule
decides), ``context`` (a key name or nearby words decide), ``optional`` (off unless configured). ``hint`` is the
public prefix that partial masking may keep (it says what kind of credential it was, never any of its secret part).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class MaskClass:
    name: str
    kind: str  # secret | pii | custom
    tier: str  # formatted | checksummed | context | optional | custom
    description: str
    hints: tuple[str, ...] = ()


_ALL = (
    MaskClass("aws_access_key_id", "secret", "formatted", "AWS access key id (AKIA/ASIA…)", ("AKIA", "ASIA")),
    MaskClass("aws_secret_access_key", "secret", "formatted", "AWS secret access key (next to its id or key name)"),
    MaskClass("gcp_api_key", "secret", "formatted", "Google Cloud API key (AIza…)", ("AIza",)),
    MaskClass("azure_connection_string", "secret", "formatted", "Azure AccountKey / SharedAccessKey value"),
    MaskClass(
        "github_token",
        "secret",
        "formatted",
        "GitHub token (ghp_, gho_, ghu_, ghs_, ghr_, github_pat_)",
        ("github_pat_", "ghp_", "gho_", "ghu_", "ghs_", "ghr_"),
    ),
    MaskClass("gitlab_token", "secret", "formatted", "GitLab personal access token (glpat-)", ("glpat-",)),
    MaskClass(
        "slack_token", "secret", "formatted", "Slack token (xoxb-, xoxp-, …)", ("xoxb-", "xoxp-", "xoxa-", "xoxs-")
    ),
    MaskClass("slack_webhook", "secret", "formatted", "Slack incoming webhook URL", ("https://hooks.slack.com/",)),
    MaskClass(
        "stripe_key", "secret", "formatted", "Stripe secret or restricted key", ("sk_live_", "rk_live_", "sk_test_")
    ),
    MaskClass(
        "llm_api_key",
        "secret",
        "formatted",
        "LLM provider API key (OpenAI, Anthropic, others)",
        ("sk-ant-", "sk-proj-", "sk-", "gsk_", "hf_", "xai-"),
    ),
    MaskClass("jwt", "secret", "formatted", "JSON Web Token", ("eyJ",)),
    MaskClass("private_key", "secret", "formatted", "PEM private key block (RSA, EC, OpenSSH, PKCS#8, PGP)"),
    MaskClass("uri_credentials", "secret", "formatted", "password in a database or broker URI"),
    MaskClass("http_auth", "secret", "formatted", "HTTP Basic or Bearer credential"),
    MaskClass("password_assignment", "secret", "context", "value of a password/secret/token assignment"),
    MaskClass("high_entropy_secret", "secret", "context", "high-entropy value under a key-like name"),
    MaskClass("email", "pii", "formatted", "e-mail address"),
    MaskClass("phone_number", "pii", "context", "phone number (validated with libphonenumber)"),
    MaskClass("credit_card", "pii", "checksummed", "payment card number (Luhn-checked, known issuer prefix)"),
    MaskClass("iban", "pii", "checksummed", "IBAN (mod-97 checked, country length)"),
    MaskClass("us_ssn", "pii", "checksummed", "US social security number (validity rules)"),
    MaskClass("ip_address", "pii", "optional", "IPv4 / IPv6 address (off unless configured)"),
)

CLASSES: dict[str, MaskClass] = {c.name: c for c in _ALL}
KINDS = ("secret", "pii")
OPTIONAL = frozenset(c.name for c in _ALL if c.tier == "optional")
DEFAULT_ON = frozenset(c.name for c in _ALL if c.tier != "optional")


def expand(
    names: list[str] | tuple[str, ...],
    custom: frozenset[str] = frozenset(),
    custom_kinds: Mapping[str, str] | None = None,
) -> frozenset[str]:
    """Class names from a config list that may name kinds (``secret``, ``pii``: built-in and custom rules of that
    kind), ``all``, classes or custom rules."""
    out: set[str] = set()
    for n in names:
        if n == "all":
            out |= DEFAULT_ON | OPTIONAL | custom
        elif n in KINDS:
            out |= {c.name for c in _ALL if c.kind == n and c.tier != "optional"}
            out |= {name for name, kind in (custom_kinds or {}).items() if kind == n}
        elif n in CLASSES or n in custom:
            out.add(n)
        else:
            raise ValueError(f"unknown masking class {n!r}")
    return frozenset(out)
