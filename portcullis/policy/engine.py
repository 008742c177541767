"""The decision engine: ``decide``, ``visible``, ``explain`` over a compiled ``PolicySet``. No I/O.

Semantics (docs/policy.md says the same for operators):

- Two tiers, ``rules`` then ``defaults``; the policy's ``default`` effect when neither has a rule that applies.
  ``defaults`` is consulted only when no rule of ``rules`` applies, so a rule there (typically one on tool
  annotations) never overrides an explicit rule.
- Within a tier: deny > hold > allow, whatever the order in the file; the deciding rule is the first in file order
  among those with the winning effect.
- Fail closed: if the condition of a consulted rule cannot be evaluated (a missing argument, a wrong type, arguments
  beyond the bounds), the decision is deny, naming that rule.
- Lists (``tools/list``...) and ``visible``: what is not known at list time (the arguments; for the list method
  itself also the target, method and annotations) is treated as "could be true" for allow and hold rules and as
  "not certain" for deny rules; a listed item is visible iff calling it could be allowed or held.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from portcullis.policy.expr import Condition, ConditionError, annotation_values, bounded
from portcullis.policy.model import (
    CALL_METHODS,
    EFFECTS,
    EMPTY_ARGS,
    ITEM_NAME_KEY,
    LIST_METHODS,
    LIST_RESULT_KEY,
    USE_METHOD,
    Decision,
    Explanation,
    Kind,
    PolicyRequest,
    Principal,
    RuleTrace,
    Status,
)
from portcullis.policy.rules import SELECTOR_OF_KIND, PolicySet, Rule

_CACHE_MAX: Final = 4096
_MEMO_MAX_CHARS: Final = 512  # conditions on longer values (a huge target name) are not remembered
_NO_UNKNOWN: Final[frozenset[str]] = frozenset()
_UNKNOWN_IN_LIST_CALL: Final = frozenset({"target", "arguments", "annotations", "method"})
_UNKNOWN_ARGUMENTS: Final = frozenset({"arguments", "annotations"})
_UNKNOWN_IN_VISIBLE: Final = frozenset({"arguments"})

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class FilteredList:
    """A list result filtered for one caller: ``result`` is a new dict, marked ``cacheScope: private``."""

    result: dict[str, Any]
    shown: int
    hidden: int


class _Data:
    """The CEL variables for one evaluation, each computed on first use; a condition gets only those it reads."""

    __slots__ = ("annotations", "args_all", "arguments", "failed", "principal", "sub", "values")

    def __init__(
        self,
        principal: Principal,
        server: str,
        method: str,
        target: str | None,
        arguments: Mapping[str, Any],
        annotations: Mapping[str, Any] | None,
    ) -> None:
        self.principal = principal
        self.arguments = arguments
        self.annotations = annotations
        self.values: dict[str, Any] = {"server": server, "method": method, "target": target or ""}
        self.sub: dict[str, Any] = {}  # the arguments converted so far (the keys conditions read)
        self.args_all = False
        self.failed: dict[str, str] = {}  # argument key (or "*") -> why it cannot be handed to CEL

    def for_condition(self, cond: Condition) -> dict[str, Any]:
        values = self.values
        if "principal" in cond.refs and "principal.groups" not in values:
            p = self.principal
            values["principal.subject"] = p.subject
            values["principal.email"] = p.email or ""
            values["principal.groups"] = sorted(p.groups)
            values["principal.client_id"] = p.client_id or ""
            values["principal.kind"] = p.kind
        if "annotations" in cond.refs and "annotations.readOnlyHint" not in values:
            values.update(annotation_values(self.annotations))
        if "arguments" in cond.refs:
            values["arguments"] = self._arguments(cond.arg_keys)
        return {name: values[name] for name in cond.variables}

    def _arguments(self, keys: frozenset[str] | None) -> dict[str, Any]:
        args = self.arguments
        if type(args) is not dict and not isinstance(args, Mapping):
            raise ConditionError("arguments are not a map")
        if self.args_all:
            return self.sub
        if keys is None:
            if "*" in self.failed:
                raise ConditionError(self.failed["*"])
            try:
                self.sub = bounded(args)
            except ConditionError as exc:
                self.failed["*"] = str(exc)
                raise
            self.args_all = True
            return self.sub
        sub = self.sub
        for k in keys:
            if k in sub or k not in args:
                continue
            if k in self.failed:
                raise ConditionError(self.failed[k])
            try:
                sub[k] = bounded(args[k])
            except ConditionError as exc:
                self.failed[k] = f"argument {k!r}: {exc}"
                raise ConditionError(self.failed[k]) from exc
        return sub


# A rule that applies to a request's server, method and target, and whether its target was unknown.
_Cand = tuple[Rule, bool]


class PolicyEngine:
    """Decisions under one ``PolicySet``. Holds only caches derived from the policy; safe to replace wholesale."""

    def __init__(self, policy: PolicySet) -> None:
        self.policy = policy
        self.version = policy.version
        self._tiers: tuple[tuple[Rule, ...], tuple[Rule, ...]] = (_ordered(policy.rules), _ordered(policy.defaults))
        self._cands: dict[tuple[str, str, str | None, str | None, bool], tuple[tuple[_Cand, ...], ...]] = {}
        self._memo: dict[tuple[Any, ...], bool | str] = {}  # condition outcomes, for conditions without arguments
        v = policy.version
        self._grant: dict[Rule, Decision] = {}
        self._list_grant: dict[Rule, Decision] = {}
        for r in policy.all_rules():
            verb = {"allow": "allows", "deny": "denies", "hold": "holds for approval"}[r.effect]
            self._grant[r] = Decision(
                r.effect, r.id, f"rule {r.id!r} {verb}", v, r.approvers, r.approvals, r.all_groups
            )
            if r.effect == "deny":
                self._list_grant[r] = self._grant[r]
            else:
                self._list_grant[r] = Decision("allow", r.id, f"rule {r.id!r} could {r.effect}", v)
        d = policy.default
        self._default = Decision(d, None, f"no rule applies: the policy default is {d}", v)
        self._list_default = (
            self._default if d == "deny" else Decision("allow", None, f"no rule applies: the policy default is {d}", v)
        )

    # -- public API ------------------------------------------------------------------------------------------

    def decide(self, req: PolicyRequest) -> Decision:
        """The decision for one request: allow, deny or hold, with the deciding rule and the policy version."""
        method = req.method
        kind = CALL_METHODS.get(method)
        if kind is None:
            kind = LIST_METHODS.get(method)
            if kind is not None:
                return self._run(req.principal, req.server, method, kind, None, EMPTY_ARGS, None, True, None)
        return self._run(
            req.principal, req.server, method, kind, req.target or "", req.arguments, req.annotations, False, None
        )

    def explain(self, req: PolicyRequest) -> Explanation:
        """The decision and, for every rule, whether it applied and why (slower than ``decide``; for tools)."""
        trace: list[RuleTrace] = []
        method = req.method
        kind = CALL_METHODS.get(method)
        if kind is None and (kind := LIST_METHODS.get(method)) is not None:
            d = self._run(req.principal, req.server, method, kind, None, EMPTY_ARGS, None, True, trace)
        else:
            d = self._run(
                req.principal,
                req.server,
                method,
                kind,
                req.target or "",
                req.arguments,
                req.annotations,
                False,
                trace,
            )
        trace.sort(key=lambda t: (t.tier != "rules", t.line))  # file order, for reading
        return Explanation(d, tuple(trace))

    def explain_unknown_arguments(self, principal: Principal, server: str, kind: Kind, name: str) -> Explanation:
        """Calling item ``name`` with arguments not known (what may this principal call at all?): a rule whose
        condition reads the arguments or annotations is traced ``maybe``; the admin API's effective permissions."""
        trace: list[RuleTrace] = []
        method = USE_METHOD.get(kind) or "tools/call"
        d = self._run(principal, server, method, kind, name, EMPTY_ARGS, None, False, trace, _UNKNOWN_ARGUMENTS)
        trace.sort(key=lambda t: (t.tier != "rules", t.line))
        return Explanation(d, tuple(trace))

    def visible(self, principal: Principal, server: str, kind: Kind, items: Iterable[T]) -> list[T]:
        """The items (MCP list entries: dicts with ``name``/``uri``/``uriTemplate``) the principal may use.

        An item is visible iff calling it could be allowed or held: arguments are not known at list time, so a
        condition on arguments counts as possibly true for allow/hold rules and as not certain for deny rules.
        Items without a name of the right type are hidden.
        """
        name_key = ITEM_NAME_KEY[kind]
        method = USE_METHOD[kind]
        out: list[T] = []
        for item in items:
            if not isinstance(item, Mapping):
                continue
            name = item.get(name_key)
            if not isinstance(name, str):
                continue
            ann = item.get("annotations") if kind == "tool" else None
            d = self._run(
                principal,
                server,
                method,
                kind,
                name,
                EMPTY_ARGS,
                ann if isinstance(ann, Mapping) else None,
                True,
                None,
                _UNKNOWN_IN_VISIBLE,
            )
            if d.effect != "deny":
                out.append(item)
        return out

    def filter_list_result(
        self, principal: Principal, server: str, method: str, result: Mapping[str, Any]
    ) -> FilteredList:
        """Filter a list method's result for the caller and mark it ``cacheScope: private`` (a new dict).

        A result whose item list is missing or not a list is returned with an empty list (fail closed).
        """
        kind = LIST_METHODS.get(method)
        if kind is None:
            raise ValueError(f"{method!r} is not a list method")
        key = LIST_RESULT_KEY[kind]
        items = result.get(key)
        seq: Sequence[Any] = items if isinstance(items, list) else []
        shown = self.visible(principal, server, kind, seq)
        out = dict(result)
        out[key] = shown
        out["cacheScope"] = "private"
        return FilteredList(out, len(shown), len(seq) - len(shown))

    # -- evaluation ------------------------------------------------------------------------------------------

    def _candidates(
        self, server: str, method: str, kind: Kind | None, target: str | None, listing: bool
    ) -> tuple[tuple[_Cand, ...], ...]:
        key = (server, method, kind, target, listing)
        got = self._cands.get(key)
        if got is None:
            tiers = []
            for rules in self._tiers:
                cands: list[_Cand] = []
                for r in rules:
                    why, unknown_target = _structural(r, server, method, kind, target, listing)
                    if why is None:
                        cands.append((r, unknown_target))
                tiers.append(tuple(cands))
            got = tuple(tiers)
            if len(self._cands) >= _CACHE_MAX:
                self._cands.clear()
            self._cands[key] = got
        return got

    def _run(
        self,
        principal: Principal,
        server: str,
        method: str,
        kind: Kind | None,
        target: str | None,
        arguments: Mapping[str, Any],
        annotations: Mapping[str, Any] | None,
        listing: bool,
        trace: list[RuleTrace] | None,
        unknown: frozenset[str] | None = None,
    ) -> Decision:
        """The one evaluation routine behind decide, visible and explain (``trace``: record every rule, no
        short cuts; the decision is the same)."""
        if unknown is None:
            unknown = _UNKNOWN_IN_LIST_CALL if listing else _NO_UNKNOWN
        grants = self._list_grant if listing else self._grant
        data: _Data | None = None
        decided: Decision | None = None
        for tier_index, rules in enumerate(self._tiers):
            cands: Iterable[_Cand]
            if trace is None:
                cands = self._candidates(server, method, kind, target, listing)[tier_index]
            else:
                cands = self._trace_structural(rules, server, method, kind, target, listing, trace, decided is None)
            fatal: Decision | None = None
            hold: Decision | None = None
            allow: Decision | None = None
            for rule, target_unknown in cands:
                # principal
                if trace is None:
                    if not rule.principal_matches(principal):
                        continue
                else:
                    why = rule.principal_mismatch(principal)
                    if why is not None:
                        trace.append(_trace(rule, "no-match", why, decided is None))
                        continue
                # condition
                status: Status
                detail = ""
                cond = rule.condition
                if cond is None:
                    status = "maybe" if target_unknown else "match"
                elif not unknown.isdisjoint(cond.refs):
                    status = "maybe"
                    detail = f"condition depends on {', '.join(sorted(unknown & cond.refs))}, not known here"
                elif kind != "tool" and "annotations" in cond.refs:
                    status = "no-match"
                    detail = "condition reads tool annotations and this request is not about a tool"
                else:
                    if data is None:
                        data = _Data(principal, server, method, target, arguments, annotations)
                    try:
                        ok = self._evaluate(cond, data)
                    except ConditionError as exc:
                        status = "error"
                        detail = f"condition could not be evaluated: {exc}"
                    else:
                        status = ("maybe" if target_unknown else "match") if ok else "no-match"
                        detail = "condition is true" if ok else "condition is false"
                if trace is not None:
                    trace.append(_trace(rule, status, detail or _match_detail(target_unknown), decided is None))
                if status == "no-match":
                    continue
                if status == "error":
                    if fatal is None:
                        fatal = Decision(
                            "deny",
                            rule.id,
                            f"rule {rule.id!r}: {detail}; denied (fail closed)",
                            self.version,
                        )
                        if trace is None:
                            return fatal
                    continue
                if rule.effect == "deny":
                    if status == "maybe":  # a deny that may not apply hides nothing
                        continue
                    if fatal is None:
                        fatal = grants[rule]
                        if trace is None:
                            return fatal
                elif rule.effect == "hold":
                    if hold is None:
                        hold = grants[rule]
                elif allow is None:
                    allow = grants[rule]
            if decided is None:
                decided = fatal or hold or allow
                if decided is not None and trace is None:
                    return decided
        if decided is not None:
            return decided
        return self._list_default if listing else self._default

    def _evaluate(self, cond: Condition, data: _Data) -> bool:
        """Evaluate, remembering the outcome of conditions that do not read arguments: those depend only on a few
        short values (principal fields, server, method, target, annotation hints), which repeat from call to call."""
        values = data.for_condition(cond)
        if "arguments" in cond.refs:
            return cond.evaluate(values)
        key_parts: list[Any] = [cond]
        size = 0
        for name in cond.variables:
            v = values[name]
            if type(v) is list:
                v = tuple(v)
                size += sum(len(x) for x in v)
            elif type(v) is str:
                size += len(v)
            key_parts.append(v)
        if size > _MEMO_MAX_CHARS:
            return cond.evaluate(values)
        key = tuple(key_parts)
        got = self._memo.get(key)
        if got is None:
            try:
                got = cond.evaluate(values)
            except ConditionError as exc:
                got = str(exc)
            if len(self._memo) >= _CACHE_MAX:
                self._memo.clear()
            self._memo[key] = got
        if got is True or got is False:
            return got
        raise ConditionError(got)

    def _trace_structural(
        self,
        rules: tuple[Rule, ...],
        server: str,
        method: str,
        kind: Kind | None,
        target: str | None,
        listing: bool,
        trace: list[RuleTrace],
        consulted: bool,
    ) -> list[_Cand]:
        out: list[_Cand] = []
        for r in rules:
            why, unknown_target = _structural(r, server, method, kind, target, listing)
            if why is None:
                out.append((r, unknown_target))
            else:
                trace.append(_trace(r, "no-match", why, consulted))
        return out


def _ordered(rules: tuple[Rule, ...]) -> tuple[Rule, ...]:
    return tuple(r for e in EFFECTS for r in rules if r.effect == e)


def _structural(
    r: Rule, server: str, method: str, kind: Kind | None, target: str | None, listing: bool
) -> tuple[str | None, bool]:
    """Whether rule ``r`` applies to this server, method and target, independent of the principal.

    Returns (why not, or None; whether the target was unknown and the rule names targets). For a list method
    (``listing`` with no target) a ``methods:`` matcher accepts the list method or the method that uses the
    listed things.
    """
    if r.servers is not None and not r.servers.match(server):
        return f"server {server!r} is not one of {list(r.servers.patterns)}", False
    if r.methods is not None and method not in r.methods:
        use = USE_METHOD.get(kind) if kind is not None and listing and target is None else None
        if use is None or use not in r.methods:
            return f"method {method} is not one of {sorted(r.methods)}", False
    if not r.has_kind_selector:
        return None, False
    if kind is None:
        return f"method {method} names no tool, resource or prompt", False
    sel = r.selector(kind)
    if sel is None:
        return f"the rule names no {SELECTOR_OF_KIND[kind]}", False
    if target is None:
        return None, not sel.any
    if not sel.match(target):
        return f"{kind.replace('_', ' ')} {target!r} is not one of {list(sel.patterns)}", False
    return None, False


def _match_detail(target_unknown: bool) -> str:
    return "could apply: the target is not known here" if target_unknown else "applies"


def _trace(rule: Rule, status: Status, detail: str, consulted: bool) -> RuleTrace:
    return RuleTrace(rule.id, rule.tier, rule.effect, status, detail, consulted, rule.line)
