"""Gateway-owned tasks for held calls (the 2026-07-28 ``io.modelcontextprotocol/tasks`` extension).

A client that declares the tasks extension and makes a call the policy holds gets a task at once instead of an
error: ``working``, status message "awaiting approval apr_…". The gateway answers ``tasks/get`` and ``tasks/cancel``
for it (only to the principal that made the call); once the approval is decided the gateway forwards the call — the
result goes through the response stages (masking included) and is recorded — and the task completes with that result,
or fails when the request is denied, expires or is withdrawn (``tasks/cancel``). Tasks live in memory, bounded; the
approval request itself is in the store.
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass, field
from typing import Any

TASKS_EXTENSION = "io.modelcontextprotocol/tasks"
TASK_PREFIX = "gwt_"
TERMINAL = frozenset({"completed", "failed", "cancelled"})
POLL_INTERVAL_MS = 500
MAX_TASKS = 10_000


def _iso(ts: dt.datetime) -> str:
    return ts.isoformat().replace("+00:00", "Z")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(slots=True)
class HeldTask:
    id: str
    owner: str  # the caller's key (issuer + subject)
    approval_id: str
    ttl_ms: int
    status: str = "working"
    status_message: str | None = None
    created: dt.datetime = field(default_factory=_now)
    updated: dt.datetime = field(default_factory=_now)
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    cancelled: bool = False

    def set(self, status: str, message: str | None = None) -> None:
        if self.status in TERMINAL:
            return
        self.status, self.status_message, self.updated = status, message, _now()

    def envelope(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "taskId": self.id,
            "status": self.status,
            "createdAt": _iso(self.created),
            "lastUpdatedAt": _iso(self.updated),
            "ttlMs": self.ttl_ms,
            "pollIntervalMs": POLL_INTERVAL_MS,
        }
        if self.status_message:
            out["statusMessage"] = self.status_message
        return out

    def detailed(self) -> dict[str, Any]:
        out = self.envelope()
        if self.status == "completed" and self.result is not None:
            out["result"] = self.result
        if self.status == "failed" and self.error is not None:
            out["error"] = self.error
        return out


class HeldTasks:
    """The gateway's own tasks, by id (bounded: the oldest finished ones go first)."""

    def __init__(self) -> None:
        self._tasks: dict[str, HeldTask] = {}

    def open(self, owner: str, approval_id: str, ttl_ms: int) -> HeldTask | None:
        """A new working task, or None when MAX_TASKS are kept and none of them has finished (no unbounded growth)."""
        if len(self._tasks) >= MAX_TASKS:
            for tid in [t.id for t in self._tasks.values() if t.status in TERMINAL][: MAX_TASKS // 10 or 1]:
                del self._tasks[tid]
            if len(self._tasks) >= MAX_TASKS:
                return None
        task = HeldTask(TASK_PREFIX + secrets.token_urlsafe(18), owner, approval_id, ttl_ms)
        task.set("working", f"awaiting approval {approval_id}")
        self._tasks[task.id] = task
        return task

    def get(self, task_id: str, owner: str) -> HeldTask | None:
        task = self._tasks.get(task_id)
        return task if task is not None and task.owner == owner else None


def declares_tasks(meta: Any) -> bool:
    """Whether a 2026-07-28 request's ``_meta`` declares the tasks extension among the client's capabilities."""
    if not isinstance(meta, dict):
        return False
    caps = meta.get("io.modelcontextprotocol/clientCapabilities")
    ext = caps.get("extensions") if isinstance(caps, dict) else None
    return isinstance(ext, dict) and TASKS_EXTENSION in ext
