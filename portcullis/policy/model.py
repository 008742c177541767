"""The policy's data: who asks (``Principal``), what is asked (``PolicyRequest``), what was decided (``Decision``).

All frozen: a decision never changes after it was made, and a request is safe to keep in a record or a cache key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, Literal

Effect = Literal["allow", "deny", "hold"]
Kind = Literal["tool", "resource", "prompt", "resource_template"]
Tier = Literal["rules", "defaults"]

EFFECTS: Final = ("deny", "hold", "allow")  # precedence order: the first one present wins

EMPTY_ARGS: Final[Mapping[str, Any]] = MappingProxyType({})

# Methods that use one named thing (the request's target), and the kind of that thing.
CALL_METHODS: Final[Mapping[str, Kind]] = MappingProxyType(
    {
        "tools/call": "tool",
        "resources/read": "resource",
        "resources/subscribe": "resource",
        "resources/unsubscribe": "resource",
        "prompts/get": "prompt",
    }
)
# List methods: their results are filtered by ``PolicyEngine.visible`` and marked private to the caller.
LIST_METHODS: Final[Mapping[str, Kind]] = MappingProxyType(
    {
        "tools/list": "tool",
        "resources/list": "resource",
        "resources/templates/list": "resource_template",
        "prompts/list": "prompt",
    }
)
# The member of a list result that holds the items, and the member of an item that names it.
LIST_RESULT_KEY: Final[Mapping[Kind, str]] = MappingProxyType(
    {"tool": "tools", "resource": "resources", "resource_template": "resourceTemplates", "prompt": "prompts"}
)
ITEM_NAME_KEY: Final[Mapping[Kind, str]] = MappingProxyType(
    {"tool": "name", "resource": "uri", "resource_template": "uriTemplate", "prompt": "name"}
)
# The method that uses an item of a kind: a listed item is visible if this method could be allowed or held for it.
USE_METHOD: Final[Mapping[Kind, str]] = MappingProxyType(
    {"tool": "tools/call", "resource": "resources/read", "resource_template": "resources/read", "prompt": "prompts/get"}
)
# Every MCP client->server request method a rule's ``methods:`` may name (a typo there is a load error).
KNOWN_METHODS: Final = frozenset(
    {
        *CALL_METHODS,
        *LIST_METHODS,
        "initialize",
        "ping",
        "completion/complete",
        "logging/setLevel",
        "server/discover",
        "tasks/get",
        "tasks/list",
        "tasks/cancel",
        "tasks/result",
        "subscriptions/listen",
    }
)

# MCP tool annotation hints and their defaults when a tool does not say (the spec's defaults: a tool that says
# nothing is assumed to write, to be destructive, not idempotent, and to reach the outside world).
ANNOTATION_DEFAULTS: Final[Mapping[str, bool]] = MappingProxyType(
    {"readOnlyHint": False, "destructiveHint": True, "idempotentHint": False, "openWorldHint": True}
)


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller. ``subject`` is the stable id from the identity provider."""

    subject: str
    email: str | None = None
    groups: frozenset[str] = frozenset()
    client_id: str | None = None
    kind: str = "user"


@dataclass(frozen=True, slots=True)
class PolicyRequest:
    """One request to decide.

    ``target`` is the tool or prompt name, or the resource URI (``None`` for list methods and methods without one).
    ``arguments`` are the call's arguments (``tools/call`` arguments, ``prompts/get`` arguments; empty otherwise).
    ``annotations`` are the tool's annotations as the upstream listed them, or ``None`` when unknown; they are
    hints from the upstream, used only by the ``defaults`` tier.
    """

    principal: Principal
    server: str
    method: str
    target: str | None = None
    arguments: Mapping[str, Any] = field(default_factory=lambda: EMPTY_ARGS)
    annotations: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome. ``rule`` is the id of the deciding rule (``None`` when the policy's default decided).

    ``approvers`` are the deciding hold rule's approvers (empty otherwise), kept for the approvals stage.
    """

    effect: Effect
    rule: str | None
    reason: str
    policy_version: str
    approvers: tuple[str, ...] = ()
    approvals: int | None = None
    all_groups: bool = False

    @property
    def allowed(self) -> bool:
        return self.effect == "allow"


Status = Literal["match", "no-match", "maybe", "error"]


@dataclass(frozen=True, slots=True)
class RuleTrace:
    """How one rule fared for one request (``PolicyEngine.explain``).

    ``status``: ``match`` (the rule applies), ``no-match`` (``detail`` says which part did not), ``maybe`` (its
    condition depends on what is not known yet, e.g. arguments when filtering a list), ``error`` (its condition
    could not be evaluated). ``consulted`` is false for rules of the ``defaults`` tier when a rule of the ``rules``
    tier already applied.
    """

    rule: str
    tier: Tier
    effect: Effect
    status: Status
    detail: str
    consulted: bool
    line: int


@dataclass(frozen=True, slots=True)
class Explanation:
    decision: Decision
    trace: tuple[RuleTrace, ...]

    def matched(self) -> list[RuleTrace]:
        return [t for t in self.trace if t.status in ("match", "maybe", "error")]
