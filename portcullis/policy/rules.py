"""Compiled rules: name globs, principal matchers and an optional condition, ready for the engine."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from portcullis.policy.expr import Condition
from portcullis.policy.model import Effect, Kind, Principal, Tier


class GlobSet:
    """Patterns where ``*`` matches any run of characters (``/`` included) and ``?`` one character; nothing else
    is special. Compiled once into an exact-name set, a prefix tuple and, for the rest, one regular expression."""

    __slots__ = ("_exact", "_prefixes", "_regex", "any", "patterns")

    def __init__(self, patterns: tuple[str, ...]) -> None:
        self.patterns = patterns
        self.any = "*" in patterns
        exact: set[str] = set()
        prefixes: list[str] = []
        other: list[str] = []
        for p in patterns:
            if "*" not in p and "?" not in p:
                exact.add(p)
            elif p.endswith("*") and "*" not in p[:-1] and "?" not in p:
                prefixes.append(p[:-1])
            else:
                other.append(p)
        self._exact = frozenset(exact)
        self._prefixes = tuple(prefixes)
        self._regex = re.compile("|".join(_glob_regex(p) for p in other), re.DOTALL) if other else None

    def match(self, name: str) -> bool:
        if self.any or name in self._exact:
            return True
        if self._prefixes and name.startswith(self._prefixes):
            return True
        return self._regex is not None and self._regex.fullmatch(name) is not None

    def __repr__(self) -> str:
        return f"GlobSet({list(self.patterns)!r})"


def _glob_regex(pattern: str) -> str:
    return "(?:" + "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern) + ")"


# The selector that names targets of each kind.
SELECTOR_OF_KIND: Final[dict[Kind, str]] = {
    "tool": "tools",
    "resource": "resources",
    "resource_template": "resources",
    "prompt": "prompts",
}


@dataclass(frozen=True, slots=True, eq=False)
class Rule:
    """One rule. ``None`` for a matcher means "any". ``order`` is its position in evaluation order."""

    id: str
    effect: Effect
    tier: Tier
    line: int
    description: str
    users: frozenset[str] | None
    groups: frozenset[str] | None
    except_groups: frozenset[str] | None
    clients: frozenset[str] | None
    servers: GlobSet | None
    tools: GlobSet | None
    resources: GlobSet | None
    prompts: GlobSet | None
    methods: frozenset[str] | None
    condition: Condition | None
    approvers: tuple[str, ...]
    approvals: int | None = None  # hold rules: distinct approvals needed (default: approvals.required)
    all_groups: bool = False  # hold rules: one approval from each approver group

    @property
    def has_kind_selector(self) -> bool:
        return self.tools is not None or self.resources is not None or self.prompts is not None

    def selector(self, kind: Kind) -> GlobSet | None:
        if kind == "tool":
            return self.tools
        if kind == "prompt":
            return self.prompts
        return self.resources

    def principal_matches(self, p: Principal) -> bool:
        if self.groups is not None and self.groups.isdisjoint(p.groups):
            return False
        if self.except_groups is not None and not self.except_groups.isdisjoint(p.groups):
            return False
        if (
            self.users is not None
            and p.subject not in self.users
            and (p.email is None or p.email.lower() not in self.users)
        ):
            return False
        return self.clients is None or (p.client_id is not None and p.client_id in self.clients)

    def principal_mismatch(self, p: Principal) -> str | None:
        """Why the principal does not match (for explanations), or ``None`` if it does."""
        if self.groups is not None and self.groups.isdisjoint(p.groups):
            return f"principal is in none of the groups {sorted(self.groups)}"
        if self.except_groups is not None and not self.except_groups.isdisjoint(p.groups):
            return f"principal is in an excepted group {sorted(self.except_groups & p.groups)}"
        if (
            self.users is not None
            and p.subject not in self.users
            and (p.email is None or p.email.lower() not in self.users)
        ):
            return f"principal is none of the users {sorted(self.users)}"
        if self.clients is not None and (p.client_id is None or p.client_id not in self.clients):
            return f"client {p.client_id!r} is none of {sorted(self.clients)}"
        return None


@dataclass(frozen=True, slots=True, eq=False)
class PolicySet:
    """A loaded, compiled policy. ``version`` is a hash of its meaning (comments and layout do not change it)."""

    version: str
    source: str
    default: Effect
    rules: tuple[Rule, ...]
    defaults: tuple[Rule, ...]

    def all_rules(self) -> tuple[Rule, ...]:
        return self.rules + self.defaults

    def summary(self) -> str:
        counts = {e: sum(1 for r in self.rules if r.effect == e) for e in ("allow", "deny", "hold")}
        parts = ", ".join(f"{n} {e}" for e, n in counts.items() if n)
        return (
            f"{len(self.rules)} rules ({parts or 'none'}), {len(self.defaults)} defaults, "
            f"default {self.default}, version {self.version}"
        )
