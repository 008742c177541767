"""The official MCP conformance suite against the fixture server, directly (no gateway).

This pins the baseline that the gateway runs are compared with: on both requirement
sets every scored check of the fixture passes. It also smoke-tests the extra tools
the gateway's own tests rely on, over both wire eras of the same endpoint.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.conformance import (
    REQUIREMENT_SETS,
    fixture_server_argv,
    missing_node_modules,
    run_conformance,
)
from tests.support.procs import ManagedProcess, running_process

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "conformance-direct"
_NODE_MISSING = missing_node_modules()

# The requirement sets also run scenarios they do not score (extensions such as
# io.modelcontextprotocol/tasks, pending scenarios, ones added after the release).
# The fixture passes those too, so a regression there is a fixture bug even though
# the suite's exit code ignores it. The only exception is a scenario the harness
# itself skips (pending its own rewrite).
NOT_SCORED_EXCEPTIONS: dict[str, dict[str, str]] = {
    "2025-11-25": {},
    "2026-07-28": {"tasks-status-notifications/tasks-status-notifications": "SKIPPED"},
}


@pytest.fixture(scope="module")
def fixture_server() -> Iterator[ManagedProcess]:
    with running_process(fixture_server_argv(port=0), ready_timeout=30) as proc:
        assert proc.ready_value.startswith("http://127.0.0.1:"), proc.ready_line
        yield proc


@pytest.mark.e2e
@pytest.mark.node
@pytest.mark.skipif(_NODE_MISSING is not None, reason=f"node_modules missing: {_NODE_MISSING}")
@pytest.mark.parametrize("requirements", REQUIREMENT_SETS)
def test_conformance_suite_passes_directly(fixture_server: ManagedProcess, requirements: str) -> None:
    run = run_conformance(fixture_server.ready_value, requirements, ARTIFACTS / requirements, timeout=240)

    assert fixture_server.is_running(), f"fixture died during the run\n{fixture_server.output()}"
    missing = run.missing_scored_scenarios()
    assert not missing, f"scored scenarios wrote no checks.json: {sorted(missing)}\n{run.log[-4000:]}"

    scored = run.scored_verdicts()
    not_passing = {k: v for k, v in scored.items() if v not in ("SUCCESS", "INFO")}
    assert not not_passing, (
        f"{requirements}: {len(not_passing)} scored checks did not pass:\n{run.describe(list(not_passing))}"
    )
    # Every scored scenario must have verified something beyond the wire-schema bookkeeping.
    for scenario in run.scored:
        assert any(
            k.startswith(f"{scenario}/") and not k.startswith(f"{scenario}/wire-schema-") and v == "SUCCESS"
            for k, v in scored.items()
        ), f"{scenario}: no successful check"
    assert run.exit_code == 0, f"suite exited {run.exit_code}\n{run.log[-4000:]}"

    exceptions = NOT_SCORED_EXCEPTIONS[requirements]
    regressed = {
        k: v for k, v in run.not_scored_verdicts().items() if v not in ("SUCCESS", "INFO") and exceptions.get(k) != v
    }
    assert not regressed, f"not-scored checks the fixture passes before:\n{run.describe(list(regressed))}"
    ran = set(run.checks)
    assert set(run.not_scored) <= ran, f"not-scored scenarios that did not run: {sorted(set(run.not_scored) - ran)}"


# ---------------------------------------------------------------------------
# The extra tools, over both eras of the one endpoint (Python SDK client).
# ---------------------------------------------------------------------------

ERAS = {"legacy": "2025-11-25", "2026-07-28": "2026-07-28"}


@pytest.mark.e2e
@pytest.mark.parametrize("mode", list(ERAS))
async def test_fixture_extra_tools(fixture_server: ManagedProcess, mode: str) -> None:
    from mcp import Client
    from mcp_types import TextContent

    progress: list[tuple[float, float | None, str | None]] = []

    async def on_progress(p: float, total: float | None, message: str | None) -> None:
        progress.append((p, total, message))

    async with Client(fixture_server.ready_value, mode=mode, read_timeout_seconds=30, cache=None) as client:
        assert client.protocol_version == ERAS[mode]

        tools = {t.name: t for t in (await client.list_tools()).tools}
        for name in ("echo", "slow_progress", "big_text", "structured", "test_simple_text"):
            assert name in tools

        echoed = await client.call_tool("echo", {"text": "héllo ✓"})
        assert [c.text for c in echoed.content if isinstance(c, TextContent)] == ["héllo ✓"]

        big = await client.call_tool("big_text", {"size": 100_000})
        (block,) = big.content
        assert isinstance(block, TextContent) and len(block.text.encode()) == 100_000

        slow = await client.call_tool("slow_progress", {"steps": 3, "delay_ms": 10}, progress_callback=on_progress)
        assert not slow.is_error
        assert [p for p, _, _ in progress] == [1, 2, 3]
        assert all(total == 3 for _, total, _ in progress)

        structured_tool = tools["structured"]
        assert structured_tool.output_schema is not None
        assert set(structured_tool.output_schema["properties"]) >= {"name", "count", "tags", "secret"}
        result = await client.call_tool("structured", {"name": "w", "count": 2})
        expected: dict[str, Any] = {"name": "w", "count": 2, "tags": ["w-0", "w-1"]}
        assert result.structured_content is not None
        assert {k: result.structured_content[k] for k in expected} == expected
        (twin,) = result.content
        assert isinstance(twin, TextContent) and '"tags"' in twin.text and "w-1" in twin.text
