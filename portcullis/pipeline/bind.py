"""The binding stage: what an upstream mints for one caller is usable by that caller only.

Task ids (``tasks/*``, 2025-11-25 ``task`` results and the 2026-07-28 tasks extension) and ``requestState`` of
input-required results are remembered with the caller that received them; another principal presenting them is
refused before the upstream sees the request. Sessions are bound at the edge (``Mcp-Session-Id``); event ids live
inside a session. In memory, bounded; no I/O.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from portcullis import errors
from portcullis.flow import Direction, Flow, Outcome
from portcullis.pipeline.base import Stage
from portcullis.wire.jsonrpc import Kind

MAX_BINDINGS = 100_000


class BindStage(Stage):
    name = "bind"

    def __init__(self, capacity: int = MAX_BINDINGS) -> None:
        self._owners: OrderedDict[tuple[str, str, str], str] = OrderedDict()
        self._capacity = capacity

    def on_request(self, flow: Flow) -> None:
        msg = flow.request
        if flow.direction is not Direction.C2S or msg.kind is not Kind.REQUEST or flow.caller is None:
            return
        params = msg.params
        for what, value in (("task", params.get("taskId")), ("state", params.get("requestState"))):
            if not isinstance(value, str):
                continue
            owner = self._owners.get((flow.server, what, value))
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
            self._bind(flow.server, what, value, flow.caller.key)

    def _bind(self, server: str, what: str, value: str, owner: str) -> None:
        key = (server, what, value)
        self._owners[key] = owner
        self._owners.move_to_end(key)
        while len(self._owners) > self._capacity:
            self._owners.popitem(last=False)


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
