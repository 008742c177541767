"""Effective permissions ("what can alice call, and what needs approval?") and explanations as JSON.

For each configured server: whether the principal may list it at all, then each item the gateway has seen there
(the tool, prompt and resource definitions it pins) decided with the arguments unknown. An item whose answer turns
on the arguments (a rule with a condition on them that could change the outcome) is ``depends``, with the rules
named; ``unlisted`` is the answer for an item of that server the gateway has not seen yet.
"""

from __future__ import annotations

from typing import Any

from portcullis.policy.engine import PolicyEngine
from portcullis.policy.model import Explanation, Kind, PolicyRequest, Principal
from portcullis.policy.rules import PolicySet

STRENGTH = {"allow": 0, "hold": 1, "deny": 2}
KINDS: tuple[Kind, ...] = ("tool", "prompt", "resource", "resource_template")
UNSEEN = "\x00(an item not seen yet)"  # a name no server can give: rules naming targets do not match it


def named_items(policy: PolicySet, server: str) -> dict[Kind, set[str]]:
    """The tools, prompts and resources the policy's rules name exactly (no wildcard) for this server."""
    out: dict[Kind, set[str]] = {}
    for rule in policy.all_rules():
        if rule.servers is not None and not rule.servers.match(server):
            continue
        for kind, sel in (("tool", rule.tools), ("prompt", rule.prompts), ("resource", rule.resources)):
            if sel is None:
                continue
            exact = {p for p in sel.patterns if "*" not in p and "?" not in p}
            if exact:
                out.setdefault(kind, set()).update(exact)  # type: ignore[arg-type]
    return out


def explain_json(ex: Explanation) -> dict[str, Any]:
    d = ex.decision
    return {
        "decision": d.effect,
        "rule": d.rule,
        "reason": d.reason,
        "policy_version": d.policy_version,
        "approvers": list(d.approvers),
        "trace": [
            {
                "rule": t.rule,
                "tier": t.tier,
                "effect": t.effect,
                "status": t.status,
                "detail": t.detail,
                "consulted": t.consulted,
                "line": t.line,
            }
            for t in ex.trace
        ],
    }


def item_permission(engine: PolicyEngine, principal: Principal, server: str, kind: Kind, name: str) -> dict[str, Any]:
    ex = engine.explain_unknown_arguments(principal, server, kind, name)
    d = ex.decision
    unsure = [
        t.rule
        for t in ex.trace
        if t.consulted and t.status == "maybe" and (t.rule == d.rule or STRENGTH[t.effect] > STRENGTH[d.effect])
    ]
    decision = "depends" if unsure else d.effect
    reason = f"depends on the arguments (rules {', '.join(unsure)})" if unsure else d.reason
    return {
        "kind": kind,
        "name": name,
        "decision": decision,
        "rule": d.rule,
        "approvers": list(d.approvers),
        "reason": reason,
    }


def effective_permissions(
    engine: PolicyEngine, principal: Principal, servers: list[str], known: dict[str, dict[str, list[str]]]
) -> dict[str, Any]:
    out = []
    for server in servers:
        listing = engine.decide(PolicyRequest(principal, server, "tools/list"))
        items = [
            item_permission(engine, principal, server, kind, name)
            for kind in KINDS
            for name in sorted(known.get(server, {}).get(kind, []))
        ]
        unlisted = item_permission(engine, principal, server, "tool", UNSEEN)
        unlisted["name"] = "(any other tool)"
        out.append(
            {
                "server": server,
                "access": listing.effect,
                "items": items,
                "unlisted": unlisted,
            }
        )
    return {
        "principal": {"subject": principal.subject, "groups": sorted(principal.groups), "email": principal.email},
        "policy_version": engine.version,
        "servers": out,
    }


def for_caller(result: dict[str, Any]) -> dict[str, Any]:
    """Effective permissions as a caller may see their own: the servers they may list and the items they may use or
    ask for (as ``tools/list`` would show them), without rule names or reasons (the policy is for auditors)."""
    servers = []
    for srv in result["servers"]:
        if srv["access"] == "deny":
            continue
        items = [_plain(i) for i in srv["items"] if i["decision"] != "deny"]
        servers.append({**srv, "items": items, "unlisted": _plain(srv["unlisted"])})
    return {**result, "servers": servers}


def _plain(item: dict[str, Any]) -> dict[str, Any]:
    reason = {
        "allow": "allowed",
        "hold": "needs an approval",
        "deny": "not allowed",
        "depends": "depends on the arguments",
    }[item["decision"]]
    return {**item, "rule": None, "reason": reason}
