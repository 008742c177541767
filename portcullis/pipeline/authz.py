"""The authorization stage: a policy decision for every request, and list results filtered to the caller.

``allow`` lets the request on; ``deny`` answers it (-32010) and the upstream never sees it; ``hold`` answers it as
held (-32011) and puts a :class:`~portcullis.approvals.model.Hold` on the flow — the exact call (caller, server,
method, target, argument digest) — which the edge settles with the approval book: an approved request for exactly
this call releases it (once) and the call goes on; otherwise the answer names the approval request to decide.
List results (tools, resources, templates, prompts) lose what the caller may not use and are marked
``cacheScope: private``. Tool annotations seen in ``tools/list`` are kept per server so that ``tools/call``
decisions can use them as default risk signals. No I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from portcullis import errors
from portcullis.approvals.model import Hold, args_digest
from portcullis.flow import Direction, Flow, Outcome
from portcullis.pipeline.base import Stage
from portcullis.policy import PolicyEngine, PolicyRequest, Principal
from portcullis.policy.model import CALL_METHODS, LIST_METHODS
from portcullis.wire.jsonrpc import Kind
from portcullis.wire.mcp import Era, name_of

HELD = -32011
UNGATED = frozenset({"initialize", "ping", "server/discover"})
ANONYMOUS = Principal(subject="anonymous", kind="anonymous")
MAX_ANNOTATED_TOOLS = 10_000


class AuthzStage(Stage):
    name = "authz"

    def __init__(self, engine: Callable[[], PolicyEngine]) -> None:
        self._engine = engine  # the current engine (policies reload underneath)
        self._annotations: dict[tuple[str, str], dict[str, Any]] = {}

    def on_request(self, flow: Flow) -> None:
        msg = flow.request
        if flow.direction is not Direction.C2S:
            return
        if msg.kind is Kind.NOTIFICATION and not (msg.method or "").startswith("notifications/"):
            # a call sent without an id would reach an upstream that runs it with no decision at all
            flow.fail(
                errors.REQUEST_DENIED,
                f"Forbidden: {msg.method!r} may not be sent as a notification",
                by=self.name,
                outcome=Outcome.DENIED,
            )
            return
        if msg.kind is not Kind.REQUEST:
            return  # notifications and the client's answers to server requests carry no new authority
        method = msg.method or ""
        if method in UNGATED:
            return  # the handshake and liveness: authenticated, and no use of anything
        # every other request — calls, lists, completion, tasks, subscriptions, vendor methods — gets a decision
        principal = flow.caller.principal if flow.caller is not None else ANONYMOUS
        target = name_of(msg) if method in CALL_METHODS else None
        if method in CALL_METHODS and target is None:
            target = _string(msg.params.get("uri"))  # resources/subscribe, unsubscribe
        args = msg.params.get("arguments")
        if args is not None and not isinstance(args, dict):
            flow.fail(
                errors.INVALID_PARAMS,
                "Invalid params: arguments must be an object",
                by=self.name,
                outcome=Outcome.DENIED,
            )
            return
        annotations = self._annotations.get((flow.server, target)) if method == "tools/call" and target else None
        decision = self._engine().decide(
            PolicyRequest(principal, flow.server, method, target, args if isinstance(args, dict) else {}, annotations)
        )
        flow.decide(decision.effect, decision.rule, decision.policy_version)
        if decision.effect == "allow":
            return
        what = f"{method} {target}" if target else method
        if decision.effect == "deny":
            flow.fail(
                errors.REQUEST_DENIED,
                f"Forbidden by policy: {what} is denied (rule {decision.rule or 'default'})",
                by=self.name,
                outcome=Outcome.DENIED,
                data={"rule": decision.rule, "policy_version": decision.policy_version},
            )
            return
        caller = flow.caller
        flow.hold = Hold(
            server=flow.server,
            method=method,
            target=target,
            digest=args_digest({k: v for k, v in msg.params.items() if k != "_meta"}),  # the whole call, not only its
            # arguments: a completion's ref, a prompt's name, a task's id are part of what was approved
            rule=decision.rule,
            policy_version=decision.policy_version,
            approvers=tuple(decision.approvers),
            requester_key=caller.key if caller is not None else "anonymous",
            requester=flow.principal or "anonymous",
            requester_subject=principal.subject,
            session_id=flow.session_id,
            arguments=args if isinstance(args, dict) else {},
            requester_groups=principal.groups,
            required=decision.approvals,
            all_groups=decision.all_groups,
        )
        # answered as held here; the edge opens (or releases) the approval request and completes this answer
        flow.fail(
            HELD,
            f"Held for approval: {what} needs approval by {list(decision.approvers)} (rule {decision.rule})",
            by=self.name,
            outcome=Outcome.DENIED,
            data={"rule": decision.rule, "approvers": list(decision.approvers), "held": True},
        )

    def on_response(self, flow: Flow) -> None:
        method = flow.request.method
        resp = flow.response
        if method is None or method not in LIST_METHODS or resp is None or resp.kind is not Kind.RESULT:
            return
        if flow.answered_by is not None:
            return
        result = resp.body.get("result")
        if not isinstance(result, dict):
            return
        if method == "tools/list":
            self._remember_annotations(flow.server, result)
        principal = flow.caller.principal if flow.caller is not None else ANONYMOUS
        filtered = self._engine().filter_list_result(principal, flow.server, method, result)
        if filtered.hidden or flow.era is Era.STATELESS:
            resp.replace({**resp.body, "result": filtered.result})

    def _remember_annotations(self, server: str, result: dict[str, Any]) -> None:
        tools = result.get("tools")
        if not isinstance(tools, list):
            return
        if len(self._annotations) > MAX_ANNOTATED_TOOLS:
            self._annotations.clear()
        for t in tools:
            if isinstance(t, dict) and isinstance(t.get("name"), str) and isinstance(t.get("annotations"), dict):
                self._annotations[(server, t["name"])] = t["annotations"]


def _string(v: object) -> str | None:
    return v if isinstance(v, str) else None
