from __future__ import annotations

import pytest

from portcullis import errors
from portcullis.flow import Direction, Flow, Outcome
from portcullis.pipeline import Pipeline, Stage
from portcullis.pipeline.record import RecordStage
from portcullis.wire.jsonrpc import parse_one
from portcullis.wire.mcp import Era


class Tracer(Stage):
    def __init__(self, name: str, log: list[str], *, deny: bool = False, boom: str | None = None) -> None:
        self.name = name
        self.log = log
        self.deny = deny
        self.boom = boom

    def on_request(self, flow: Flow) -> None:
        self.log.append(f"{self.name}.req")
        if self.boom == "req":
            raise RuntimeError("secret detail that must not leak")
        if self.deny:
            flow.fail(errors.REQUEST_DENIED, "denied", by=self.name, outcome=Outcome.DENIED)

    def on_response(self, flow: Flow) -> None:
        self.log.append(f"{self.name}.resp")
        if self.boom == "resp":
            raise ValueError("x")

    def on_server_message(self, flow: Flow) -> None:
        self.log.append(f"{self.name}.srv")
        if self.boom == "srv":
            raise ValueError("x")


def flow() -> Flow:
    return Flow("s", Era.SESSION, Direction.C2S, parse_one(b'{"jsonrpc":"2.0","id":1,"method":"tools/call"}'))


def test_request_in_order_response_in_reverse() -> None:
    log: list[str] = []
    p = Pipeline([Tracer("a", log), Tracer("b", log), Tracer("c", log)])
    f = flow()
    seen = p.run_request(f)
    f.set_upstream_response(parse_one(b'{"jsonrpc":"2.0","id":1,"result":{}}'))
    p.run_response(f, seen)
    assert log == ["a.req", "b.req", "c.req", "c.resp", "b.resp", "a.resp"]


def test_a_stage_that_answers_stops_the_walk() -> None:
    log: list[str] = []
    p = Pipeline([Tracer("a", log), Tracer("b", log, deny=True), Tracer("c", log)])
    f = flow()
    seen = p.run_request(f)
    p.run_response(f, seen)
    assert log == ["a.req", "b.req", "b.resp", "a.resp"]
    assert f.outcome is Outcome.DENIED and f.answered_by == "b"


def test_an_exception_fails_closed_without_leaking_its_message() -> None:
    log: list[str] = []
    p = Pipeline([Tracer("a", log), Tracer("b", log, boom="req"), Tracer("c", log)])
    f = flow()
    p.run_request(f)
    assert f.response is not None and f.outcome is Outcome.FAILED
    err = f.response.body["error"]
    assert err["code"] == errors.STAGE_FAILED and "secret" not in err["message"] and "b stage" in err["message"]
    assert "c.req" not in log


def test_a_failing_response_stage_replaces_the_response() -> None:
    log: list[str] = []
    p = Pipeline([Tracer("a", log), Tracer("b", log, boom="resp")])
    f = flow()
    p.run_request(f)
    f.set_upstream_response(parse_one(b'{"jsonrpc":"2.0","id":1,"result":{"secret":1}}'))
    p.run_response(f, None)
    assert f.response is not None and "error" in f.response.body and f.outcome is Outcome.FAILED
    assert log[-1] == "a.resp"  # earlier stages (the recorder) still see the failure


def test_a_failing_server_message_stage_blocks_delivery() -> None:
    p = Pipeline([Tracer("a", []), Tracer("b", [], boom="srv")])
    f = Flow("s", Era.SESSION, Direction.S2C, parse_one(b'{"jsonrpc":"2.0","method":"notifications/message"}'))
    with pytest.raises(errors.StageError):
        p.run_server_message(f)
    assert f.outcome is Outcome.FAILED


def test_record_stage_records_both_directions_with_latency() -> None:
    p = Pipeline([RecordStage()])
    f = flow()
    seen = p.run_request(f)
    f.set_upstream_response(parse_one(b'{"jsonrpc":"2.0","id":1,"result":{}}'))
    p.run_response(f, seen)
    assert [(r.direction, r.kind, r.method, r.msg_id) for r in f.records] == [
        ("c2s", "request", "tools/call", "1"),
        ("s2c", "result", "tools/call", "1"),
    ]
    assert f.records[1].latency_us is not None and f.records[1].outcome == "ok"
    assert f.records[1].payload == b'{"jsonrpc":"2.0","id":1,"result":{}}'
