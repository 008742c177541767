"""The stage pipeline.

Stages run in an explicit order (data, declared in :data:`DEFAULT_ORDER` and overridable in config). For a
client message, ``on_request`` runs first to last; a stage that answers (``flow.answer``) stops the walk and the
upstream is never called. The answer, or the upstream's response, then runs ``on_response`` from the last stage
that saw the request back to the first. Server-initiated messages travel the way responses do: ``on_server_message``
from last to first.

Any exception in a stage fails the flow closed: it gets a JSON-RPC error, is recorded, and is not forwarded.
Stages do no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence

from portcullis import errors
from portcullis.flow import Flow, Outcome
from portcullis.pipeline.base import Stage

__all__ = ["Pipeline", "Stage"]


class Pipeline:
    __slots__ = ("_forward", "_reverse", "names")

    def __init__(self, stages: Sequence[Stage]) -> None:
        self._forward = tuple(stages)
        self._reverse = tuple(reversed(self._forward))
        self.names = tuple(s.name for s in self._forward)

    def stage(self, name: str) -> Stage | None:
        return next((s for s in self._forward if s.name == name), None)

    def run_request(self, flow: Flow) -> int:
        """Run request hooks. Returns how many stages saw the request (for the reverse walk)."""
        return self.resume_request(flow, 0)

    def resume_request(self, flow: Flow, seen: int) -> int:
        """Request hooks from stage ``seen`` on (0: all; later: a held call released by its approval)."""
        for stage in self._forward[seen:]:
            seen += 1
            try:
                stage.on_request(flow)
            except Exception as exc:
                _fail(flow, stage.name, exc)
                return seen
            if flow.response is not None:
                return seen
        return seen

    def run_response(self, flow: Flow, seen: int | None = None) -> None:
        stages = self._reverse if seen is None or seen >= len(self._forward) else self._forward[:seen][::-1]
        for stage in stages:
            try:
                stage.on_response(flow)
            except Exception as exc:
                _fail(flow, stage.name, exc)

    def run_server_message(self, flow: Flow) -> None:
        for stage in self._reverse:
            try:
                stage.on_server_message(flow)
            except Exception as exc:
                # a server message that cannot be checked is not delivered
                flow.outcome = Outcome.FAILED
                flow.answered_by = stage.name
                flow.detail = f"stage {stage.name!r} failed: {type(exc).__name__}"
                raise errors.StageError(stage.name, exc) from exc


def _fail(flow: Flow, stage: str, exc: BaseException) -> None:
    msg = f"Request blocked: the gateway's {stage} stage failed ({type(exc).__name__})"
    flow.fail(errors.STAGE_FAILED, msg, by=stage)
