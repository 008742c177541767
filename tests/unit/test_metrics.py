"""Trail metrics: counted from committed records, with bounded labels."""

from __future__ import annotations

from prometheus_client import CollectorRegistry
from pytest import approx

from portcullis.flow import Record
from portcullis.observe.metrics import TrailMetrics


def rec(server: str, method: str | None, **kw: object) -> Record:
    base: dict[str, object] = {"ts_ns": 1, "session_id": None, "msg_id": "1", "flow_id": 1, "payload": None}
    return Record(server=server, method=method, **(base | kw))  # type: ignore[arg-type]


def test_labels_are_bounded_and_masks_counted() -> None:
    reg = CollectorRegistry()
    m = TrailMetrics(reg, ["db"], ["email", "aws_key"])
    m.committed(
        [
            rec("db", "tools/call", direction="c2s", kind="request"),  # a request alone counts nothing
            rec("db", "tools/call", direction="s2c", kind="result", latency_us=1500, outcome="ok", decision="allow"),
            rec("db", "x/made-up", direction="s2c", kind="result", latency_us=10, outcome="ok"),
            rec("probe-123", "tools/call", direction="s2c", kind="error", latency_us=10, outcome="denied"),
            rec(
                "db",
                "tools/call",
                direction="s2c",
                kind="result",
                latency_us=10,
                outcome="ok",
                masked='[{"class": "email", "path": "a", "count": 2}, {"class": "weird", "path": "b", "count": 1}]',
            ),
            rec("db", None, direction="gw", kind="session_open"),
            rec("db", None, direction="gw", kind="not an identifier; drop table"),
        ]
    )
    get = reg.get_sample_value
    assert get("portcullis_requests_total", {"server": "db", "method": "tools/call", "outcome": "ok"}) == 2
    assert get("portcullis_requests_total", {"server": "db", "method": "other", "outcome": "ok"}) == 1
    assert get("portcullis_requests_total", {"server": "other", "method": "tools/call", "outcome": "denied"}) == 1
    assert get("portcullis_request_duration_seconds_sum", {"server": "db", "method": "tools/call"}) == approx(0.00151)
    assert get("portcullis_policy_decisions_total", {"server": "db", "decision": "allow"}) == 1
    assert get("portcullis_masked_values_total", {"server": "db", "class": "email"}) == 2
    assert get("portcullis_masked_values_total", {"server": "db", "class": "other"}) == 1
    assert get("portcullis_gateway_events_total", {"kind": "session_open"}) == 1
    assert get("portcullis_gateway_events_total", {"kind": "other"}) == 1
