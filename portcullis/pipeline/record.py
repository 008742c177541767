"""The recording stage: every message in both directions becomes a :class:`Record` on the flow.

It runs first on the way in and last on the way out, so it records what the client sent and exactly what the
client is about to receive (after every other stage changed or answered it). The edge writes ``flow.records`` to
the store and releases a response only once its record is durable.
"""

from __future__ import annotations

import time

import orjson

from portcullis.flow import Direction, Flow, Outcome, Record
from portcullis.pipeline.base import Stage
from portcullis.wire.jsonrpc import Message, MsgId


def id_text(msg_id: MsgId) -> str | None:
    return None if msg_id is None else orjson.dumps(msg_id).decode()


def message_record(flow: Flow, msg: Message, direction: Direction, outcome: Outcome | None = None) -> Record:
    latency = None
    if direction is Direction.S2C and msg.kind.is_response and flow.direction is Direction.C2S:
        latency = (time.monotonic_ns() - flow.started_ns) // 1000
    return Record(
        ts_ns=time.time_ns(),
        server=flow.server,
        session_id=flow.session_id,
        direction=direction.value,
        kind=msg.kind.value,
        method=msg.method if msg.method is not None else (flow.method if msg.kind.is_response else None),
        msg_id=id_text(msg.id),
        flow_id=flow.id,
        payload=msg.raw,
        outcome=None if outcome is None else outcome.value,
        latency_us=latency,
        detail=flow.detail if outcome is not None and outcome is not Outcome.OK else None,
        principal=flow.principal,
        decision=flow.decision,
        rule=flow.rule,
        policy_version=flow.policy_version,
        masked=None if flow.masked is None or direction is Direction.C2S else orjson.dumps(flow.masked).decode(),
        sealed=None if direction is Direction.C2S else flow.sealed,
    )


class RecordStage(Stage):
    name = "record"

    def on_request(self, flow: Flow) -> None:
        rec = message_record(flow, flow.request, flow.direction)
        flow.request_record = rec
        flow.records.append(rec)

    def on_response(self, flow: Flow) -> None:
        if flow.response is not None:
            flow.records.append(message_record(flow, flow.response, Direction.S2C, flow.outcome or Outcome.OK))

    def on_server_message(self, flow: Flow) -> None:
        flow.records.append(message_record(flow, flow.request, Direction.S2C, flow.outcome or Outcome.OK))


EVENT_PAYLOAD_LIMIT = 65536  # what a rejected body keeps in the record (the first bytes, for forensics)


def event_record(
    server: str,
    session_id: str | None,
    kind: str,
    detail: str | None = None,
    payload: bytes | None = None,
    outcome: str | None = None,
    principal: str | None = None,
) -> Record:
    """A record that is not a message: session open/close, a rejection before any flow existed, an upstream fault."""
    if payload is not None and len(payload) > EVENT_PAYLOAD_LIMIT:
        payload = payload[:EVENT_PAYLOAD_LIMIT]
    return Record(
        ts_ns=time.time_ns(),
        server=server,
        session_id=session_id,
        direction="gw",
        kind=kind,
        method=None,
        msg_id=None,
        flow_id=0,
        payload=payload,
        outcome=outcome,
        detail=detail,
        principal=principal,
    )
