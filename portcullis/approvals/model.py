"""What a held call is bound to, and the states of an approval request.

A hold is bound to the exact call: who asked (issuer + subject), which server, method and target, and a digest of
the arguments (SHA-256 of their canonical JSON: sorted keys, no whitespace). An approval covers that call and no
other: the same caller retrying the same call with the same arguments, once.

States::

    pending ──approve (enough approvers)──▶ approved ──retried call──▶ released
       │  └─deny (anyone)──▶ denied         └─release window passed──▶ expired
       ├─expiry──▶ expired
       └─the waiting caller cancels──▶ withdrawn
    (no request) ──break-glass caller, with a reason──▶ break_glass ──an approver reviews──▶ reviewed

An approval may also grant time-boxed access: the requester may make the same kind of call (server, method, target,
arguments matching the grant's patterns) without asking again until the grant lapses.
"""

from __future__ import annotations

import fnmatch
import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

import orjson

PENDING, APPROVED, DENIED, EXPIRED, RELEASED = "pending", "approved", "denied", "expired", "released"
BREAK_GLASS, REVIEWED = "break_glass", "reviewed"  # went through without approval; then reviewed afterwards
WITHDRAWN = "withdrawn"  # the waiting caller cancelled the call
STATES = (PENDING, APPROVED, DENIED, EXPIRED, RELEASED, BREAK_GLASS, REVIEWED, WITHDRAWN)


def args_digest(arguments: Any) -> str:
    """The digest an approval is bound to: canonical JSON of the arguments (``{}`` when there are none)."""
    canonical = orjson.dumps(arguments if arguments is not None else {}, option=orjson.OPT_SORT_KEYS)
    return "sha256:" + hashlib.sha256(canonical).hexdigest()


def new_id() -> str:
    return "apr_" + secrets.token_urlsafe(12)


@dataclass(frozen=True, slots=True)
class Hold:
    """A call the policy held, as the authz stage saw it (no I/O: the edge turns it into an approval request)."""

    server: str
    method: str
    target: str | None
    digest: str
    rule: str | None
    policy_version: str | None
    approvers: tuple[str, ...]
    requester_key: str  # issuer + subject: who may retry the approved call
    requester: str  # the principal as records name it
    requester_subject: str
    session_id: str | None
    arguments: Any = None  # the call's arguments, in memory only (grants match them; the store keeps the digest)
    requester_groups: frozenset[str] = frozenset()
    required: int | None = None  # the rule's number of approvals (None: approvals.required)
    all_groups: bool = False  # the rule wants one approval from each approver group


def covers(patterns: Any, arguments: Any) -> bool:
    """Whether a grant's argument patterns cover a call's arguments: None covers any arguments; otherwise every
    listed argument must be present and match its glob (``fnmatch``, on the value as text); others are free."""
    if patterns is None:
        return True
    if not isinstance(patterns, dict) or not isinstance(arguments, dict):
        return False
    for name, pattern in patterns.items():
        if name not in arguments:
            return False
        value = arguments[name]
        text = value if isinstance(value, str) else orjson.dumps(value).decode()
        if not fnmatch.fnmatchcase(text, str(pattern)):
            return False
    return True
