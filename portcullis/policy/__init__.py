"""Access policy: who may call, read or list what, on which server; allow, deny or hold for approval.

The gateway uses::

    store = PolicyStore("policy.yaml")          # raises PolicyError if the first load fails
    decision = store.engine.decide(PolicyRequest(principal, server, "tools/call", "query", arguments, annotations))
    filtered = store.engine.filter_list_result(principal, server, "tools/list", result)   # cacheScope: private
    store.check()                               # now and then: reloads if the file changed, keeps the last good one

See docs/policy.md.
"""

from portcullis.policy.engine import FilteredList, PolicyEngine
from portcullis.policy.expr import MAX_DEPTH, MAX_NODES, MAX_STRING_CHARS
from portcullis.policy.load import PolicyError, load_policy, load_policy_text
from portcullis.policy.model import (
    Decision,
    Effect,
    Explanation,
    Kind,
    PolicyRequest,
    Principal,
    RuleTrace,
)
from portcullis.policy.rules import PolicySet, Rule
from portcullis.policy.store import PolicyStore, ReloadResult

__all__ = [
    "MAX_DEPTH",
    "MAX_NODES",
    "MAX_STRING_CHARS",
    "Decision",
    "Effect",
    "Explanation",
    "FilteredList",
    "Kind",
    "PolicyEngine",
    "PolicyError",
    "PolicyRequest",
    "PolicySet",
    "PolicyStore",
    "Principal",
    "ReloadResult",
    "Rule",
    "RuleTrace",
    "load_policy",
    "load_policy_text",
]
