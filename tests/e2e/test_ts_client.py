"""The official TypeScript SDK client (``Client`` + ``StreamableHTTPClientTransport``) through the gateway.

``tests/node/ts_client.mjs`` runs under Node 22 against one gateway route and prints one JSON object with what it
saw. One gateway serves three upstreams, so the same client code crosses the gateway to:

* ``everything-stdio``: server-everything as a stdio child of the gateway (one child per session),
* ``everything-http``: server-everything over Streamable HTTP (its own process, loopback only),
* ``fixture``: the project's conformance fixture (Python SDK) over Streamable HTTP.

Each target's run is done once (module-scoped) and checked by several tests: the features the client saw, the
gateway's records of the same session, and that the gateway never answered the client with a 5xx of its own.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.conformance import NODE22, fixture_server_argv, node_env
from tests.support.everything import running_everything_http
from tests.support.gateway import REPO_ROOT, RunningGateway, everything_stdio, running_gateway
from tests.support.procs import running_process
from tests.support.records import load_records

pytestmark = [pytest.mark.e2e, pytest.mark.node]

TS_CLIENT = REPO_ROOT / "tests" / "node" / "ts_client.mjs"
RUN_TIMEOUT_S = 90  # hard bound on one script run; its own watchdog (below) fires first and prints what it has
WATCHDOG_MS = 60_000

TARGETS = {"everything-stdio": "everything", "everything-http": "everything", "fixture": "fixture"}


@dataclass
class TsRun:
    target: str
    profile: str
    marker: str
    exit_code: int
    seconds: float
    obs: dict[str, Any]
    stderr: str
    store: str

    def explain(self) -> str:
        return f"{self.target}: exit {self.exit_code}, errors {self.obs.get('errors')}\n--- stderr ---\n{self.stderr}"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    with (
        running_everything_http() as everything,
        running_process(fixture_server_argv()) as fixture,
        running_gateway(
            tmp_path_factory.mktemp("gw-ts"),
            {
                "everything-stdio": everything_stdio(),
                "everything-http": {"url": everything.url},
                "fixture": {"url": fixture.ready_value},
            },
        ) as gw,
    ):
        yield gw


def run_ts_client(
    profile: str, url: str, marker: str, cwd: Path = REPO_ROOT, env: dict[str, str] | None = None
) -> tuple[int, float, dict[str, Any], str]:
    started = time.monotonic()
    proc = subprocess.run(
        [str(NODE22), str(TS_CLIENT), profile, url, marker],
        capture_output=True,
        timeout=RUN_TIMEOUT_S,
        cwd=cwd,
        env={**node_env(), "TS_CLIENT_WATCHDOG_MS": str(WATCHDOG_MS), **(env or {})},
        check=False,
    )
    seconds = time.monotonic() - started
    stderr = proc.stderr.decode("utf-8", "replace")
    lines = proc.stdout.decode("utf-8", "replace").strip().splitlines()
    assert lines, f"ts_client.mjs printed nothing (exit {proc.returncode})\n{stderr}"
    return proc.returncode, seconds, json.loads(lines[-1]), stderr


@pytest.fixture(scope="module", params=list(TARGETS))
def run(request: pytest.FixtureRequest, gateway: RunningGateway) -> TsRun:
    target: str = request.param
    profile = TARGETS[target]
    marker = f"ts-{target}-{time.time_ns()}"
    code, seconds, obs, stderr = run_ts_client(profile, gateway.url(target), marker)
    return TsRun(target, profile, marker, code, seconds, obs, stderr, gateway.store)


def test_ts_client_features(run: TsRun) -> None:
    o = run.obs
    assert not o["timedOut"], run.explain()
    assert o["errors"] == {}, run.explain()
    assert run.exit_code == 0, run.explain()

    # initialize through the gateway: session era, a gateway-minted session id, the upstream's identity
    assert o["connect"]["protocolVersion"] == "2025-11-25"
    assert o["connect"]["hasSessionId"] is True
    expected_server = "mcp-servers/everything" if run.profile == "everything" else "portcullis-conformance-fixture"
    assert o["connect"]["serverInfo"]["name"] == expected_server
    assert {"tools", "resources", "prompts"} <= set(o["connect"]["capabilities"])

    # tools: listed and called
    if run.profile == "everything":
        assert {"echo", "get-sum", "trigger-long-running-operation"} <= set(o["tools"])
        # the client declared sampling + elicitation: the server saw it (through the gateway) and offers these
        assert {"trigger-sampling-request", "trigger-elicitation-request"} <= set(o["tools"])
        assert o["sum"] == {"text": "The sum of 2 and 40 is 42.", "isError": False}
    else:
        assert {"echo", "slow_progress", "test_sampling", "test_elicitation", "structured"} <= set(o["tools"])
    assert o["echo"]["text"] == o["echo"]["expected"] and o["echo"]["isError"] is False
    assert o["structured"]["structuredContent"], o["structured"]
    assert o["structured"]["structuredContent"] == o["structured"]["textTwin"]

    # a resource listed and read
    res = o["resource"]
    assert res["count"] >= 1 and res["readUri"] == res["uri"]
    assert (res["textLength"] or 0) > 0 or (res["blobLength"] or 0) > 0
    if run.profile == "fixture":
        assert res["uri"] == "test://static-text" and res["textLength"] == len(
            "This is the content of the static text resource."
        )

    # prompts listed and got, with and without arguments
    prompts = o["prompts"]
    if run.profile == "everything":
        assert {"simple-prompt", "args-prompt"} <= set(prompts["names"])
        assert prompts["simple"] == ["This is a simple prompt without arguments."]
        assert prompts["withArgs"] == ["What's weather in Lisbon?"]
    else:
        assert {"test_simple_prompt", "test_prompt_with_arguments"} <= set(prompts["names"])
        assert prompts["simple"] == ["This is a simple prompt for testing."]
        assert prompts["withArgs"] == ["Prompt with arguments: arg1='Lisbon', arg2='Porto'"]

    # progress: every step, in order, the first well before the result (streamed, not buffered)
    prog = o["progress"]
    assert prog["isError"] is False and prog["result"]
    assert [e["progress"] for e in prog["events"]] == [1, 2, 3, 4]
    assert all(e["total"] == 4 for e in prog["events"])
    spread = 2000 if run.profile == "everything" else 1200  # the tool's whole duration, ms
    assert prog["resultAtMs"] - prog["events"][0]["atMs"] > spread / 2, prog

    # sampling: the server's sampling/createMessage reached the client's handler, and its answer the server
    samp = o["sampling"]
    assert samp["isError"] is False
    assert len(samp["asked"]) == 1 and samp["prompt"] in samp["asked"][0]["text"][0]
    assert f"sampled by ts for: {samp['asked'][0]['text'][0]}" in samp["result"]
    if run.profile == "everything":
        assert samp["asked"][0]["maxTokens"] == 10 and "ts-test-model" in samp["result"]

    # elicitation: the form reached the client's handler; the accepted content reached the server
    eli = o["elicitation"]
    assert eli["isError"] is False and len(eli["asked"]) == 1
    if run.profile == "everything":
        assert "name" in eli["asked"][0]["fields"]
        assert "- Name: Ada Lovelace" in eli["result"] and "- Favorite Integer: 7" in eli["result"]
    else:
        assert eli["asked"][0] == {"message": "Who are you?", "fields": ["email", "username"]}
        # the client sent its e-mail to the server in the clear; the server's echo of it comes back masked
        assert eli["result"] == 'User response: action=accept, content={"username":"ada","email":"[REDACTED:email]"}'

    # cancellation via AbortSignal: the call is rejected at the abort, and the session goes on working
    cancel = o["cancel"]
    assert cancel["aborted"] is True and "ts client aborts" in cancel["error"], cancel
    assert 250 <= cancel["elapsedMs"] < 1000, cancel
    assert o["afterCancel"]["text"] == o["afterCancel"]["expected"]

    # session ended by DELETE; a capability-less client does not get the capability-gated tools
    assert o["terminate"] == {"sessionIdAfter": None}
    assert o["bare"]["gatedToolsPresent"] == [] and o["bare"]["toolCount"] > 0


def test_ts_client_session_is_recorded(run: TsRun) -> None:
    assert run.obs["errors"] == {}, run.explain()
    recs = load_records(run.store)
    sessions = {r["session_id"] for r in recs if run.marker.encode() in (r["payload"] or b"")}
    assert len(sessions) == 1 and None not in sessions, sessions
    sid = sessions.pop()
    mine = [r for r in recs if r["session_id"] == sid]
    assert all(r["server"] == run.target for r in mine)
    assert [r["seq"] for r in mine] == sorted(r["seq"] for r in mine)
    kinds = [r["kind"] for r in mine]
    assert "session_open" in kinds and "session_close" in kinds
    # after the session closed, only gateway events (e.g. client_gone for a flow the close ended), no messages
    assert all(r["direction"] == "gw" for r in mine[kinds.index("session_close") :])

    def body(r: dict[str, Any]) -> dict[str, Any]:
        out = json.loads(r["payload"])
        assert isinstance(out, dict)
        return out

    calls = [r for r in mine if r["method"] == "tools/call" and (r["direction"], r["kind"]) == ("c2s", "request")]
    answers = {r["msg_id"]: r for r in mine if r["method"] == "tools/call" and r["direction"] == "s2c"}
    cancels = [r for r in mine if r["method"] == "notifications/cancelled"]
    assert len(cancels) == 1 and cancels[0]["direction"] == "c2s", cancels
    cancelled_id = json.dumps(body(cancels[0])["params"]["requestId"])
    cancelled_call = next(r for r in calls if r["msg_id"] == cancelled_id)
    assert cancelled_call["seq"] < cancels[0]["seq"]

    # every tools/call the client made is recorded, and each one but the cancelled one has its result, after it
    names = [body(r)["params"]["name"] for r in calls]
    assert len(names) == 8 if run.profile == "everything" else 7, names
    for req in calls:
        if req is cancelled_call:
            continue
        res = answers.get(req["msg_id"])
        assert res is not None, f"no recorded response for {body(req)}"
        assert (res["kind"], res["outcome"]) == ("result", "ok") and req["seq"] < res["seq"]
        assert body(res)["id"] == body(req)["id"]
    # the cancelled call never completed upstream: no result is recorded for it. What may be recorded: the Python SDK
    # fixture answers a cancelled request with a -32800 error; server-everything withholds the response, which leaves
    # the gateway's flow pending: over HTTP it ends with the session (a client_gone event), over stdio the gateway
    # answers it with its own -32001 when it stops the session's child.
    late = answers.get(cancelled_id)
    assert late is None or (late["kind"], body(late)["error"]["code"]) in {("error", -32800), ("error", -32001)}, late

    # the server→client requests and the client's answers, in the same session, between the call and its result
    for method in ("sampling/createMessage", "elicitation/create"):
        asks = [r for r in mine if r["method"] == method and r["kind"] == "request"]
        assert len(asks) == 1 and asks[0]["direction"] == "s2c", asks
        replies = [
            r for r in mine if r["direction"] == "c2s" and r["kind"] == "result" and r["msg_id"] == asks[0]["msg_id"]
        ]
        assert len(replies) == 1 and asks[0]["seq"] < replies[0]["seq"]
        call = [r for r in calls if r["seq"] < asks[0]["seq"]][-1]  # the call that made the server ask
        assert answers[call["msg_id"]]["seq"] > replies[0]["seq"]  # its result came after the client's answer
        expected = {"sampling/createMessage": ("trigger-sampling-request", "test_sampling")}.get(
            method, ("trigger-elicitation-request", "test_elicitation")
        )
        assert body(call)["params"]["name"] in expected

    # progress notifications of the timed call were recorded as they went out to the client
    progress = [r for r in mine if r["method"] == "notifications/progress" and r["direction"] == "s2c"]
    assert len(progress) >= 4


def test_ts_client_never_gets_a_gateway_5xx(run: TsRun) -> None:
    """The upstreams here are healthy: the gateway must not tell the client they failed.

    Regression test for ``fixture`` (see also tests/e2e/test_everything_http.py::
    test_upstream_409_on_second_get_stream_is_relayed_not_turned_into_502). After the cancelled call the fixture
    answers -32800 and ends that POST stream. The TypeScript transport counts only a *result* as the response, so it
    resumes the stream with GET + Last-Event-ID; the gateway replays from its buffer and ends the resumed stream (the
    flow is finished); the transport then reconnects with a plain GET while its standalone GET stream is still open,
    and the fixture rightly answers 409 Conflict. The gateway used to turn that 409 into 502 Bad Gateway (-32002
    "upstream answered HTTP 409"), fixed in d1cb310; the client now sees the 409.
    """
    failures = [f for f in run.obs["httpFailures"] if f["status"] >= 500]
    assert failures == [], json.dumps(failures, indent=1)
    assert not [e for e in run.obs["transportErrors"] if "Bad Gateway" in e], run.obs["transportErrors"]
