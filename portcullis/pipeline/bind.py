"""The binding stage: what an upstream mints for one caller is usable by that caller only.

Task ids (``tasks/*``, 2025-11-25 ``task`` results and the 2026-07-28 tasks extension) and ``requestState`` of
input-required results are remembered with the caller that received them; another principal presenting them is
refused before the upstream sees the request. Sessions are bound at the edge (``Mcp-Session-Id``); event ids live
inside a session. In memory, bounded, and in the store: a new binding travels with the response's records (a
:class:`~portcullis.flow.Binding`, committed before the caller sees the id), and the edge looks up an id this
replica has not seen (:meth:`BindStage.unknown`, :meth:`BindStage.learn`) before the stages run — so a task minted
through one replica is refused to other principals on every replica. No I/O here.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from typing import Any

from portcullis import errors
from portcullis.flow import Binding, Direction, Flow, Outcome
from portcullis.pipeline.base import Stage
from portcullis.wire.jsonrpc import Kind

MAX_BINDINGS = 100_000
UNREADABLE = "\x00unreadable"  # learned when the store could not say whose an id is: refused, not bound


class BindStage(Stage):
    name = "bind"

    def __init__(self, capacity: int = MAX_BINDINGS) -> None:
        self._owners: OrderedDict[tuple[str, str, str], str] = OrderedDict()
        self._capacity = capacity

    def unknown(self, flow: Flow) -> list[tuple[str, str, str]]:
        """(server, what, digest) of the ids this request presents that this replica has not seen bound."""
        msg = flow.request
        if msg.kind is not Kind.REQUEST:
            return []
        out = []
        for what, value in (("task", msg.params.get("taskId")), ("state", msg.params.get("requestState"))):
            if isinstance(value, str) and (flow.server, what, value) not in self._owners:
                out.append((flow.server, what, _digest(value)))
        return out

    def learn(self, flow: Flow, owners: dict[tuple[str, str, str], str]) -> None:
        """Owners found in the store for ``unknown`` ids (keyed by (server, what, digest))."""
        params = flow.request.params
        for what, value in (("task", params.get("taskId")), ("state", params.get("requestState"))):
            if isinstance(value, str) and (owner := owners.get((flow.server, what, _digest(value)))) is not None:
                self._bind(flow.server, what, value, owner)

    def on_request(self, flow: Flow) -> None:
        msg = flow.request
        if flow.direction is not Direction.C2S or msg.kind is not Kind.REQUEST or flow.caller is None:
            return
        params = msg.params
        for what, value in (("task", params.get("taskId")), ("state", params.get("requestState"))):
            if not isinstance(value, str):
                continue
            owner = self._owners.get((flow.server, what, value))
            if owner == UNREADABLE:
                del self._owners[(flow.server, what, value)]  # ask the store again next time
                flow.fail(
                    errors.STORE_UNAVAILABLE,
                    "Service Unavailable: whose this id is cannot be read from the store now; try again",
                    by=self.name,
                    outcome=Outcome.FAILED,
                )
                return
            if owner is not None and owner != flow.caller.key:
                label = "task" if what == "task" else "request state"
                flow.fail(
                    errors.REQUEST_DENIED,
                    f"Forbidden: this {label} belongs to another principal",
                    by=self.name,
                    outcome=Outcome.DENIED,
                )
                return

    def on_response(self, flow: Flow) -> None:
        resp = flow.response
        if resp is None or resp.kind is not Kind.RESULT or flow.caller is None or flow.answered_by is not None:
            return
        result = resp.body.get("result")
        if not isinstance(result, dict):
            return
        for what, value in _minted(result):
            key = (flow.server, what, value)
            if self._owners.get(key) != flow.caller.key:
                flow.records.append(Binding(flow.server, what, _digest(value), flow.caller.key, time.time_ns()))
            self._bind(flow.server, what, value, flow.caller.key)

    def _bind(self, server: str, what: str, value: str, owner: str) -> None:
        key = (server, what, value)
        self._owners[key] = owner
        self._owners.move_to_end(key)
        while len(self._owners) > self._capacity:
            self._owners.popitem(last=False)


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()


def _minted(result: dict[str, Any]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    if isinstance(result.get("taskId"), str):  # 2026-07-28 tasks extension: the result is the task
        out.append(("task", result["taskId"]))
    task = result.get("task")
    if isinstance(task, dict) and isinstance(task.get("taskId"), str):  # 2025-11-25 CreateTaskResult
        out.append(("task", task["taskId"]))
    if isinstance(result.get("requestState"), str):  # 2026-07-28 input-required
        out.append(("state", result["requestState"]))
    return out
