"""The flow: one object per JSON-RPC exchange, carried through every stage.

A flow starts with one message. For a client request it ends with exactly one response, either the upstream's
or one a stage set (a denial, a failure); never both, never none. Server-initiated messages (notifications and
server→client requests on a stream) are flows of their own with ``direction = S2C`` and no response.
"""

from __future__ import annotations

import enum
import itertools
import time
from dataclasses import dataclass, field
from typing import Any

from portcullis.wire.jsonrpc import Kind, Message, error_message
from portcullis.wire.mcp import Era


class Direction(enum.Enum):
    C2S = "c2s"  # client to server
    S2C = "s2c"  # server to client


class Outcome(enum.Enum):
    OK = "ok"  # forwarded / delivered
    ERROR = "error"  # the upstream answered with a JSON-RPC error
    DENIED = "denied"  # a stage answered instead of the upstream
    FAILED = "failed"  # a stage or the gateway failed; the flow was blocked
    UPSTREAM_FAILED = "upstream_failed"  # the upstream died, hung, or spoke garbage


_ids = itertools.count(1)


@dataclass(slots=True)
class Record:
    """One row of the session record. Built by the recording stage (no I/O), written by the store."""

    ts_ns: int
    server: str
    session_id: str | None
    direction: str
    kind: str
    method: str | None
    msg_id: str | None
    flow_id: int
    payload: bytes | None
    outcome: str | None = None
    latency_us: int | None = None
    detail: str | None = None
    principal: str | None = None
    decision: str | None = None  # allow / deny / hold, on the records of a flow the policy decided
    rule: str | None = None
    policy_version: str | None = None
    masked: str | None = None  # JSON: which classes the mask stage replaced, where ([{"class", "path", "count"}])
    sealed: bytes | None = None  # the unmasked original, encrypted to the forensic key (masking.forensic)
    prev_hash: bytes | None = None  # the audit chain (store/chain.py): set by the store writer, in seq order
    hash: bytes | None = None
    chain: str | None = None
    seq: int | None = None  # the store's number for it, known after commit (only when an export listens)


@dataclass(slots=True)
class Binding:
    """A minted task id or requestState bound to the caller that received it (the bind stage), committed with the
    response that carried it, so every replica refuses it to anyone else."""

    server: str
    what: str
    digest: str
    owner: str
    created_ns: int


@dataclass(slots=True)
class Flow:
    server: str
    era: Era
    direction: Direction
    request: Message
    session_id: str | None = None
    protocol_version: str | None = None
    response: Message | None = None
    outcome: Outcome | None = None
    answered_by: str | None = None
    detail: str | None = None
    principal: str | None = None  # the caller as the records name it (see identity.edge.Caller.record_text)
    caller: Any = None  # identity.edge.Caller of the request (S2C flows: of the session or parent request)
    decision: str | None = None  # the policy's effect for this flow, when it decided one
    rule: str | None = None
    policy_version: str | None = None
    request_record: Record | None = None  # set by the recording stage; decisions are written onto it too
    masked: list[dict[str, Any]] | None = None  # what the mask stage replaced in the message the client gets
    hold: Any = None  # approvals.model.Hold when the policy held the call (the edge settles it with the book)
    sealed: bytes | None = None  # that message's unmasked original, sealed for break-glass forensics
    id: int = field(default_factory=lambda: next(_ids))
    started_ns: int = field(default_factory=time.monotonic_ns)
    responded_ns: int | None = None
    records: list[Record | Binding] = field(default_factory=list)

    def decide(self, effect: str, rule: str | None, policy_version: str | None) -> None:
        """Note the policy's decision; it goes into the flow's records (the request's included)."""
        self.decision, self.rule, self.policy_version = effect, rule, policy_version
        r = self.request_record
        if r is not None:
            r.decision, r.rule, r.policy_version = effect, rule, policy_version

    def bind(self, caller: Any) -> None:
        """Name the caller this flow acts for (its principal goes into every record of the flow)."""
        self.caller = caller
        self.principal = None if caller is None else caller.record_text

    @property
    def method(self) -> str | None:
        return self.request.method

    def answer(self, response: Message, outcome: Outcome, by: str, detail: str | None = None) -> None:
        """A stage answers the flow itself (deny, fail). The upstream never sees the request."""
        self.response = response
        self.outcome = outcome
        self.answered_by = by
        self.detail = detail

    def fail(self, code: int, message: str, by: str, outcome: Outcome = Outcome.FAILED, data: object = None) -> None:
        self.answer(error_message(self.request.id, code, message, data), outcome, by, message)

    def unanswer(self, detail: str) -> None:
        """Withdraw a stage's answer: an approval released the held call, which now goes on to the upstream."""
        self.response = None
        self.outcome = None
        self.answered_by = None
        self.detail = detail

    def set_upstream_response(self, response: Message) -> None:
        self.response = response
        self.responded_ns = time.monotonic_ns()
        self.outcome = Outcome.ERROR if response.kind is Kind.ERROR else Outcome.OK
